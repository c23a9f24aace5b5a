"""How a study applies the safety clamp: a sampled value is never silently replaced.

The rule (README, "Studies"): a trial whose sampled values the clamp would change fails
instead of training on other values; what the clamp changes elsewhere (values the trial
did not sample) is recorded in the trial's ``clamp_adjustments``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import optuna
import pytest
from optuna.trial import TrialState

from drex_opt.rules import config, safety
from drex_opt.search import planning
from drex_opt.search import trial as trial_mod

from cli_helpers import ROOT, run_cli

CORES = os.cpu_count() or 1
# One more worker than this machine has cores: inside the brief's range (1–256), but the
# clamp caps workers at the core count of the machine the trial trains on.
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


def test_values_the_trial_did_not_sample_are_adjusted_and_recorded(tmp_path, monkeypatch):
    base = config.load_baseline("quick")
    # A baseline meant for a bigger machine: valid by the brief, capped here.
    base["vec"].update(num_workers=2 * CORES, num_envs=2 * CORES)
    del base["train"]["batch_size"], base["train"]["minibatch_size"], base["train"]["max_minibatch_size"]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(base))
    plan = plan_for(tmp_path, monkeypatch, "", baseline=str(path))
    runner = trial_mod.TrialRunner(plan, None, threading.Event())
    trial = optuna.create_study(directions=["maximize"] * 3).ask()
    overrides, adjustments = runner.overrides_for(trial)
    assert overrides["vec"]["num_workers"] == CORES
    assert any(a.startswith("vec.num_workers:") and f"set to {CORES}" in a for a in adjustments), adjustments
    # every sampled value is used as sampled
    flat = {f"{s}.{k}": v for s, values in overrides.items() for k, v in values.items()}
    assert trial.params and all(flat[name] == value for name, value in trial.params.items())
    # the derived sizes follow the topology actually trained
    used = safety.merge(plan.baseline, overrides)
    expected = (used["env"]["num_envs"] * used["env"]["num_drones"] * used["vec"]["num_envs"]
                * used["train"]["bptt_horizon"])
    assert overrides["train"]["batch_size"] == expected


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
