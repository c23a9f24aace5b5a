"""How a study applies the safety clamp: a sampled value is never silently replaced.

The rule (README, "Studies"): a trial whose sampled values the clamp would change fails
instead of training on other values; what the clamp changes elsewhere (values the trial
did not sample) is recorded in the trial's ``clamp_adjustments``. A baseline this machine
cannot train as written is refused before the study starts.
"""

from __future__ import annotations

import json
import shutil
import threading

import optuna
import pytest
from optuna.trial import TrialState

from drex_opt.rules import config, machine, safety
from drex_opt.search import planning
from drex_opt.search import trial as trial_mod

from cli_helpers import ROOT, one_line_error, run_cli

CORES = machine.physical_cores()
# One more worker than this machine has cores: inside the brief's range (1–256), but the
# clamp caps workers at the core count of the machine the trial trains on (PufferLib
# refuses more multiprocessing workers than physical cores).
TOO_MANY_WORKERS = CORES + 1


def spaces_with(tmp_path, focus: str, extra_toml: str):
    """A copy of the shipped search spaces with ``extra_toml`` appended to ``focus``'s file."""
    folder = tmp_path / "spaces"
    shutil.copytree(ROOT / "search_spaces", folder)
    with open(folder / f"{focus}.toml", "a", encoding="utf-8") as fh:
        fh.write("\n" + extra_toml)
    return folder


WORKERS_SPACE = f"""
[params."vec.num_workers"]
type = "categorical"
choices = [{TOO_MANY_WORKERS}]
"""


def plan_for(tmp_path, monkeypatch, extra_toml: str, baseline: str = "quick"):
    monkeypatch.setenv("DREX_SEARCH_SPACES", str(spaces_with(tmp_path, "diagnostic_grip", extra_toml)))
    settings = planning.StudySettings(focus="diagnostic_grip", storage=f"sqlite:///{tmp_path}/s.db",
                                       baseline=baseline, timesteps=1000, studies_dir=tmp_path / "studies")
    return planning.plan(settings)


def test_a_sampled_value_the_clamp_changes_fails_the_trial(tmp_path, monkeypatch):
    plan = plan_for(tmp_path, monkeypatch, WORKERS_SPACE)
    runner = trial_mod.TrialRunner(plan, None, threading.Event())
    study = optuna.create_study(directions=["maximize"] * 3)
    trial = study.ask()
    with pytest.raises(trial_mod.TrialFailure) as failure:
        runner.overrides_for(trial)
    reason = str(failure.value)
    assert "vec.num_workers" in reason and "changed sampled" in reason
    # the reason carries the clamp's own sentence, naming the machine's core count
    assert f"set to {CORES}" in reason


def test_a_study_on_a_baseline_meant_for_a_bigger_machine_is_refused(tmp_path):
    """The trials train here: a baseline this machine cannot run as written is refused up
    front (one line, exit 2, no storage), not quietly trained on fewer workers."""
    base = config.load_baseline("quick")
    base["vec"].update(num_workers=2 * CORES, num_envs=2 * CORES)
    del base["train"]["batch_size"], base["train"]["minibatch_size"], base["train"]["max_minibatch_size"]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(base))
    proc = run_cli("study", "--focus", "diagnostic_grip", "--baseline", str(path), "--trials", "1",
                   "--timesteps", "1000", "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    one_line_error(proc, "vec.num_workers", f"{2 * CORES}", f"{CORES} physical cores")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.json"], "nothing is written"


def test_a_trial_inside_the_rules_has_no_adjustments(tmp_path, monkeypatch):
    plan = plan_for(tmp_path, monkeypatch, "")
    runner = trial_mod.TrialRunner(plan, None, threading.Event())
    study = optuna.create_study(directions=["maximize"] * 3)
    for _ in range(5):
        overrides, adjustments = runner.overrides_for(study.ask())
        assert adjustments == []
        merged = safety.merge(plan.baseline, overrides)
        assert safety.derive_batch_sizes(merged)["batch_size"] == merged["train"]["batch_size"]


@pytest.mark.slow
def test_study_fails_the_clamped_trial_and_goes_on(tmp_path):
    """Through the CLI: the baseline trial trains, the clamped trial fails with its reason."""
    folder = spaces_with(tmp_path, "diagnostic_grip", WORKERS_SPACE)
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "diagnostic_grip", "--trials", "2", "--timesteps", "100000",
                   "--storage", url, "--json", cwd=tmp_path, env={"DREX_SEARCH_SPACES": str(folder)})
    assert proc.returncode == 0, proc.stderr
    trials = optuna.load_study(study_name="drex-diagnostic_grip-quick", storage=url).get_trials()
    baseline, sampled = trials
    assert baseline.user_attrs["role"] == "baseline" and baseline.state == TrialState.COMPLETE
    assert baseline.user_attrs["clamp_adjustments"] == []
    assert sampled.state == TrialState.FAIL
    assert "vec.num_workers" in sampled.user_attrs["fail_reason"]
    assert "run_dir" not in sampled.user_attrs, "a clamped trial never starts a training run"
    assert not (tmp_path / "studies" / "drex-diagnostic_grip-quick" / "trial-1").exists()
    assert json.loads(proc.stdout)["states"] == {"COMPLETE": 1, "FAIL": 1}
