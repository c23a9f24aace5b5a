"""Warm-started studies: trials continue the diagnosed run's drone, trial 0 unchanged, the
winner's checkpoint is the next run's start, and the loop keeps to its budget."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from drex_opt.errors import UserError
from drex_opt.rules import config, safety
from drex_opt.run import checkpoint, runner
from drex_opt.search import planning, study as study_mod

from cli_helpers import one_line_error, run_cli

# Long enough for the drone to learn something (grips) on the quick baseline.
RUN_STEPS = 700_000
TRIAL_STEPS = 120_000


def events(run_dir: Path, kind: str) -> list[dict]:
    out = []
    for line in (Path(run_dir) / "train.log").read_text().splitlines():
        if line.startswith("@drex ") and f'"event": "{kind}"' in line:
            out.append(json.loads(line[6:]))
    return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A quick-baseline run of RUN_STEPS: a drone that grips now and then."""
    root = tmp_path_factory.mktemp("run")
    proc = run_cli("train", "--timesteps", str(RUN_STEPS), "--run-dir", str(root / "run"), "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["grip_success"] > 0.05, "the fixture's drone should have learned to grip a little"
    return root / "run"


def copy_run(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


# ---------------------------------------------------------------- the run layer
@pytest.mark.slow
def test_a_continued_run_keeps_the_drones_steps_and_optimizer(trained_run, tmp_path):
    proc = run_cli("train", "--config", str(trained_run / "config.json"), "--load-model-path",
                   str(trained_run / "model.pt"), "--timesteps", "50000", "--run-dir", str(tmp_path / "next"),
                   "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    before = json.loads((trained_run / "summary.json").read_text())["agent_steps"]
    assert s["started_from"] == str((trained_run / "model.pt").resolve())
    assert s["started_from_agent_steps"] == before
    assert s["drone_agent_steps"] == before + s["agent_steps"]
    assert s["optimizer_state"] == "loaded"
    assert checkpoint.steps_seen(tmp_path / "next" / "model.pt") == s["drone_agent_steps"]
    assert checkpoint.optimizer_path(tmp_path / "next" / "model.pt").is_file()


@pytest.mark.slow
def test_another_optimizer_starts_fresh_and_says_why(trained_run, tmp_path):
    (tmp_path / "o.json").write_text(json.dumps({"train": {"optimizer": "adamw"}}))
    proc = run_cli("train", "--config", str(trained_run / "config.json"), "--override", str(tmp_path / "o.json"),
                   "--load-model-path", str(trained_run / "model.pt"), "--timesteps", "20000",
                   "--run-dir", str(tmp_path / "next"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)["optimizer_state"]
    assert state.startswith("fresh:") and "adamw" in state


def test_a_checkpoint_without_lineage_has_unknown_steps(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"")
    assert checkpoint.steps_seen(tmp_path / "x.pt") is None
    assert checkpoint.steps_seen(None) == 0
    lineage = checkpoint.write_lineage(tmp_path / "y.pt", 100, tmp_path / "x.pt")
    assert "agent_steps" not in lineage and checkpoint.steps_seen(tmp_path / "y.pt") is None


def test_copy_carries_the_sidecars_and_drops_stale_ones(tmp_path):
    src, dst = tmp_path / "a" / "model.pt", tmp_path / "best.pt"
    src.parent.mkdir()
    src.write_bytes(b"w")
    checkpoint.write_lineage(src, 10, None)
    checkpoint.optimizer_path(dst).write_bytes(b"old")
    checkpoint.copy(src, dst)
    assert dst.read_bytes() == b"w" and checkpoint.steps_seen(dst) == 10
    assert not checkpoint.optimizer_path(dst).exists(), "an older drone's optimizer state must not stay"


# ---------------------------------------------------------------- refusals before anything runs
def fabricated_run(where: Path) -> Path:
    """A run folder whose summary says "grips but does not deliver", without a checkpoint."""
    where.mkdir(parents=True)
    (where / "summary.json").write_text(json.dumps({
        "grip_success": 0.4, "delivery_success": 0.02, "end_to_end_success": 0.0,
        "metrics_extended": {"grip_attempts": 0.9, "hover_efficiency": 0.5, "collision_rate": 0.0}}))
    return where


def test_from_run_without_checkpoint_names_the_file(tmp_path):
    run = fabricated_run(tmp_path / "run")
    db = tmp_path / "s.db"
    proc = run_cli("study", "--from-run", str(run), "--storage", f"sqlite:///{db}", cwd=tmp_path, timeout=120)
    one_line_error(proc, str(run / "model.pt"), "--from-scratch")
    assert not db.exists() and not (tmp_path / "studies").exists()
    plan = planning.plan(planning.StudySettings(from_run=run, from_scratch=True, storage=f"sqlite:///{db}"))
    assert plan.warm_start is None and plan.focus == "improve_carrying"


def test_from_scratch_and_warm_start_conflict(tmp_path):
    with pytest.raises(UserError, match="not both"):
        planning.plan(planning.StudySettings(focus="improve_grip", from_scratch=True, warm_start=tmp_path / "x.pt",
                                             storage=f"sqlite:///{tmp_path}/s.db"))
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("content, fragment", [
    ("missing", "checkpoint not found"),
    ("garbage", "cannot be read"),
    ("other policy", "does not fit"),
])
def test_bad_warm_start_is_refused_before_anything_runs(tmp_path, content, fragment):
    path = tmp_path / "w.pt"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content == "other policy":
        torch.save({"encoder.weight": torch.zeros(4, 5)}, path)
    db = tmp_path / "s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--warm-start", str(path), "--storage", f"sqlite:///{db}",
                   cwd=tmp_path, timeout=120)
    one_line_error(proc, fragment)
    assert not db.exists() and not (tmp_path / "studies").exists()


# ---------------------------------------------------------------- warm studies through the real CLI
@pytest.mark.slow
def test_warm_study_continues_the_run_and_trial_0_is_continue_unchanged(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    url = f"sqlite:///{tmp_path}/s.db"
    common = ["--timesteps", str(TRIAL_STEPS), "--storage", url, "--seed", "3", "--no-early-stopping", "--json"]
    warm = run_cli("study", "--from-run", str(run), "--trials", "3", "--study-name", "warm", *common, cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr
    scratch = run_cli("study", "--from-run", str(run), "--from-scratch", "--trials", "1", "--study-name", "scratch",
                      *common, cwd=tmp_path)
    assert scratch.returncode == 0, scratch.stderr
    result = json.loads(warm.stdout)
    ckpt = str((run / "model.pt").resolve())
    assert result["warm_start"] == ckpt and json.loads(scratch.stdout)["warm_start"] is None

    study = optuna.load_study(study_name="warm", storage=url)
    run_summary = json.loads((run / "summary.json").read_text())
    assert study.user_attrs["warm_start"] == ckpt
    assert study.user_attrs["warm_start_agent_steps"] == run_summary["agent_steps"]
    run_config = json.loads((run / "config.json").read_text())
    for t in study.get_trials():
        assert t.state == TrialState.COMPLETE, t.user_attrs
        run_dir = Path(t.user_attrs["run_dir"])
        assert events(run_dir, "start")[0]["load_model"] == ckpt
        assert t.user_attrs["warm_start"] == ckpt
        assert t.user_attrs["drone_agent_steps"] == run_summary["agent_steps"] + t.user_attrs["agent_steps"]
        assert t.user_attrs["optimizer_state"] == "loaded"
    # Trial 0 is the run's own configuration, continued for the trial's budget: the control.
    zero = study.trials[0]
    assert zero.user_attrs["role"] == "baseline"
    trained = json.loads((Path(zero.user_attrs["run_dir"]) / "config.json").read_text())
    expected = safety.merge(run_config, {"train": {"total_timesteps": TRIAL_STEPS, "seed": 3}})
    assert trained == expected
    # The study's JSON says how the best trial did against that control.
    versus = result["versus_baseline"]
    assert versus["baseline_trial"] == 0 and versus["trial"] == result["best"]["number"]
    assert versus["gain"]["end_to_end_success"] == pytest.approx(
        result["best"]["values"]["end_to_end_success"] - versus["baseline"]["end_to_end_success"])

    # A warm trial starts where the run left off; a scratch trial starts from nothing. A short
    # trial may end before its first progress report: then its final report is its first.
    def first_grip(run_dir: str) -> float:
        reports = [e for kind in ("progress", "final") for e in events(Path(run_dir), kind)
                   if "environment/perfect_grip" in e]
        return reports[0]["environment/perfect_grip"]

    scratch_trial = optuna.load_study(study_name="scratch", storage=url).trials[0]
    assert "warm_start" in scratch_trial.user_attrs and scratch_trial.user_attrs["warm_start"] is None
    assert first_grip(zero.user_attrs["run_dir"]) > first_grip(scratch_trial.user_attrs["run_dir"])

    # Export: the winner's values and its checkpoint, so the next run continues that drone.
    out = tmp_path / "autopilot" / "proposals" / "next_config.json"
    exported = run_cli("export", "--study-name", "warm", "--storage", url, "--out", str(out), "--json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    e = json.loads(exported.stdout)
    winner = study.trials[e["trial"]]
    proposal = json.loads(out.read_text())
    assert proposal["autopilot"] == {"resume_mode": "continue",
                                     "resume_from": str(Path(winner.user_attrs["checkpoint"]).resolve())}
    assert e["resume_from"] == proposal["autopilot"]["resume_from"]
    assert safety.validate(proposal, config.load_baseline("quick")) == []
    note = " ".join((out.parent / "next_config.notes.md").read_text().split())
    assert "continuing the drone unchanged" in note and proposal["autopilot"]["resume_from"] in note
    # A scratch study's export leaves the next run's start to its baseline.
    plain = run_cli("export", "--study-name", "scratch", "--storage", url, "--dry-run", "--json", cwd=tmp_path)
    assert "autopilot" not in json.loads(plain.stdout)["overrides"]
    # report --json carries the same comparison.
    report = run_cli("report", "--study-name", "warm", "--storage", url, "--out", str(tmp_path / "rep"), "--json",
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["versus_baseline"]["baseline_trial"] == 0


def blown_up(run: Path, nats_per_action: float = 3.0) -> Path:
    """``run`` with its policy's action spread widened e^``nats_per_action`` times in every
    action dimension: what a far too large learning rate leaves (the built-in drone's policy
    is PufferLib's Default, a Gaussian whose log standard deviation is ``decoder_logstd``)."""
    state = torch.load(run / "model.pt", weights_only=True)
    state["decoder_logstd"] = state["decoder_logstd"] + nats_per_action
    torch.save(state, run / "model.pt")
    return run


# Entropy of one Gaussian action dimension with standard deviation 1 (fresh weights' log std
# is 0): ½·ln(2πe). The built-in drone acts in 3 dimensions.
UNIT_GAUSSIAN_NATS = 0.5 * math.log(2 * math.pi * math.e)


def test_the_rule_separates_a_blown_up_policy_from_a_healthy_one():
    # Entropies measured on the built-in drone (see drex_opt.rules.unlearned): fresh weights 4.26,
    # healthy runs 2.8-4.26, runs blown up by learning rate 0.5 at 10-13.
    for healthy in (2.8, 4.1, 4.26):
        assert runner.CheckpointCheck(None, healthy, 4.26).unlearned is None
    wrecked = runner.CheckpointCheck(None, 10.2, 4.26).unlearned
    assert wrecked and "10.20" in wrecked and "4.26" in wrecked
    # Nothing measured, nothing judged.
    assert runner.CheckpointCheck(None, None, 4.26).unlearned is None
    assert runner.CheckpointCheck(None, 13.0, None).unlearned is None


@pytest.mark.slow
def test_the_check_measures_the_policys_entropy_against_fresh_weights(trained_run, tmp_path):
    cfg = json.loads((trained_run / "config.json").read_text())
    healthy = runner.check_checkpoint(cfg, "drone_pp", trained_run / "model.pt")
    assert healthy.problem is None and healthy.unlearned is None
    assert healthy.fresh_entropy == pytest.approx(3 * UNIT_GAUSSIAN_NATS, abs=1e-3)
    assert healthy.entropy < healthy.fresh_entropy + 0.5  # a drone that learned to grip
    wide = blown_up(copy_run(trained_run, tmp_path / "run"))
    wrecked = runner.check_checkpoint(cfg, "drone_pp", wide / "model.pt")
    assert wrecked.entropy == pytest.approx(healthy.entropy + 3 * 3.0, abs=1e-3)
    assert wrecked.unlearned and "more randomly than fresh weights" in wrecked.unlearned


@pytest.mark.slow
def test_a_drone_more_random_than_fresh_weights_is_not_continued_and_the_winner_is_handed_on(trained_run, tmp_path):
    """Continuing a blown-up policy teaches it nothing for millions of steps: the study of
    its run trains fresh weights, says why, and the next run continues the study's winner,
    never the wrecked drone. A checkpoint the user names with --warm-start is still taken."""
    run = blown_up(copy_run(trained_run, tmp_path / "run"))
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--from-run", str(run), "--trials", "2", "--timesteps", str(TRIAL_STEPS), "--storage", url,
                   "--study-name", "wrecked", "--seed", "3", "--no-early-stopping", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["warm_start"] is None
    assert "is not continued" in result["warm_start_declined"] and str(run / "model.pt") in result["warm_start_declined"]
    assert "more randomly than fresh weights" in proc.stderr
    study = optuna.load_study(study_name="wrecked", storage=url)
    assert study.user_attrs["warm_start_declined"] == result["warm_start_declined"]
    for t in study.get_trials():
        assert t.state == TrialState.COMPLETE, t.user_attrs
        assert events(Path(t.user_attrs["run_dir"]), "start")[0]["load_model"] is None

    out = tmp_path / "autopilot" / "proposals" / "next_config.json"
    exported = run_cli("export", "--study-name", "wrecked", "--storage", url, "--out", str(out), "--json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    winner = study.trials[json.loads(exported.stdout)["trial"]]
    assert json.loads(out.read_text())["autopilot"] == {
        "resume_mode": "continue", "resume_from": str(Path(winner.user_attrs["checkpoint"]).resolve())}
    note = " ".join((out.parent / "next_config.notes.md").read_text().split())
    assert "Why fresh weights" in note and "not the run's drone" in note

    named = planning.plan(planning.StudySettings(from_run=run, warm_start=run / "model.pt", storage=url,
                                                 study_name="named"))
    assert named.warm_start == (run / "model.pt").resolve() and named.warm_start_declined is None


@pytest.mark.slow
def test_a_checkpoint_that_stops_fitting_fails_the_trials_not_the_study(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    plan = planning.plan(planning.StudySettings(from_run=run, trials=2, timesteps=50_000, early_stopping=False,
                                                storage=f"sqlite:///{tmp_path}/s.db", studies_dir=tmp_path / "st"))
    assert plan.warm_start == (run / "model.pt").resolve()
    torch.save({"encoder.weight": torch.zeros(3, 3)}, run / "model.pt")  # replaced after planning
    result = study_mod.run(plan)
    assert result.states == {"FAIL": 2} and not result.interrupted
    study = optuna.load_study(study_name=plan.study_name, storage=plan.storage_url)
    for t in study.trials:
        assert "does not fit" in t.user_attrs["fail_reason"]


# ---------------------------------------------------------------- the loop as generations


@pytest.mark.slow
def test_budget_stops_the_loop_and_each_generation_continues_the_winner(pilot):
    budget = 400_000
    proc = run_cli("autopilot", "--optimize", "--budget", str(budget), "--timesteps", "100000",
                   "--study-trials", "2", "--study-timesteps", "50000", "--storage", f"sqlite:///{pilot}/s.db",
                   "--json", cwd=pilot)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert "stopped before run" in proc.stderr and "budget" in proc.stderr
    assert len(results) >= 2
    loop = results[-1]["compute"]["loop_agent_steps"]
    assert loop <= budget
    runs = sorted(p for p in (pilot / "autopilot" / "runs").iterdir() if p.is_dir())
    assert len(runs) == len(results)
    steps = 0
    for run, result in zip(runs, results):
        compute = json.loads((run / "compute.json").read_text())
        assert compute == result["compute"]
        summary = json.loads((run / "summary.json").read_text())
        assert compute["run_agent_steps"] == summary["agent_steps"]
        study_dir = pilot / "autopilot" / "studies" / f"autopilot-{run.name}"
        trained = sum(json.loads(p.read_text())["agent_steps"] for p in study_dir.glob("*/summary.json"))
        assert compute["study_agent_steps"] == trained
        steps += compute["run_agent_steps"] + compute["study_agent_steps"]
        assert compute["loop_agent_steps"] == steps
        assert "Agent steps: run" in (run / "notes.txt").read_text()
    # The second run continued the first study's winner, exactly that checkpoint.
    first = results[0]["export"]
    assert first["resume_from"]
    start = events(runs[1], "start")[0]
    assert start["load_model"] == first["resume_from"]
    second = json.loads((runs[1] / "summary.json").read_text())
    assert second["started_from"] == first["resume_from"]
    assert second["drone_agent_steps"] == checkpoint.steps_seen(first["resume_from"]) + second["agent_steps"]
    assert "Drone: continued" in (runs[1] / "notes.txt").read_text()
    # The last generation had no study (the budget left too little): the next run would
    # continue its drone unchanged, never restart from the baseline.
    assert results[-1]["study"] is None and any("no study" in p for p in results[-1]["problems"])
    waiting = json.loads((pilot / "autopilot" / "proposals" / "next_config.json").read_text())
    assert waiting["autopilot"] == {"resume_mode": "continue", "resume_from": str((runs[-1] / "model.pt").resolve())}
    assert {k: v for k, v in waiting.items() if k != "autopilot"} == \
        {k: v for k, v in json.loads((runs[-1] / "override.json").read_text()).items() if k != "autopilot"}
    rows = json.loads(run_cli("runs", str(pilot / "autopilot" / "runs"), "--json", cwd=pilot).stdout)
    assert [r["compute"] for r in rows] == [r["compute"] for r in results]
    assert rows[1]["drone_agent_steps"] == second["drone_agent_steps"]


@pytest.mark.slow
def test_study_budget_caps_each_generations_study(pilot):
    # 65,536 steps is whole batches at every horizon the warm spaces sample (512 agents × 16..64)
    per_trial = 65_536
    proc = run_cli("autopilot", "--optimize", "--runs", "1", "--timesteps", "100000", "--study-trials", "3",
                   "--study-timesteps", str(per_trial), "--study-budget", str(2 * per_trial + 1000),
                   "--storage", f"sqlite:///{pilot}/s.db", "--json", cwd=pilot)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["study"]["trials_run"] == 2, "3 trials asked, 2 fit"
    assert 0 < result["compute"]["study_agent_steps"] <= 2 * per_trial + 1000
    one_line_error(run_cli("autopilot", "--study-budget", "0", cwd=pilot, timeout=120), "--study-budget")


@pytest.mark.slow
def test_a_generations_default_study_cap_follows_the_runs_grip(pilot):
    # A 100k-step run leaves 135k of the 250k budget: too little for two warm trials of any
    # focus (300k steps at least), so nothing is trained for a study either way. What the
    # refusal names says which cap applied: one run's steps once the drone grips in 10% of
    # episodes (the brief's warning line), else only the loop's budget.
    proc = run_cli("autopilot", "--optimize", "--runs", "1", "--timesteps", "100000", "--budget", "250000",
                   "--storage", f"sqlite:///{pilot}/s.db", "--json", cwd=pilot)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["study"] is None and result["compute"]["study_agent_steps"] == 0
    [problem] = [p for p in result["problems"] if "no study" in p]
    if result["summary"]["grip_success"] >= 0.1:
        assert "one run's agent steps (the default study cap) allows 100,000" in problem, problem
    else:
        assert "the budget leaves" in problem and "default study cap" not in problem, problem


def test_the_study_cap_is_the_runs_steps_unless_the_user_sized_the_study():
    from drex_opt import autopilot

    cap = lambda **kw: autopilot.study_cap(autopilot.AutopilotSettings(**kw), 1_234_567)[0]
    assert cap() == 1_234_567
    assert cap(study_budget=5_000) == 5_000
    assert cap(study_budget=5_000, study_trials=9) == 5_000
    assert cap(study_trials=9) == float("inf") and cap(study_timesteps=100_000) == float("inf")


def test_a_drone_that_does_not_grip_yet_gets_its_focuss_whole_study():
    """The brief's warning line, grip_success < 0.1: below it the study is not capped at one run."""
    from drex_opt import autopilot

    cap = lambda grip, **kw: autopilot.study_cap(autopilot.AutopilotSettings(**kw), 1_234_567,
                                                 {"grip_success": grip})
    assert cap(0.0)[0] == cap(0.099)[0] == float("inf")
    assert "grips in 9.9% of episodes" in cap(0.099)[1]
    assert cap(0.1)[0] == cap(0.36)[0] == cap(None)[0] == 1_234_567
    assert cap(0.0, study_budget=5_000)[0] == 5_000  # the user's size still wins


def test_a_budget_below_one_run_is_refused_before_anything_runs(pilot):
    proc = run_cli("autopilot", "--budget", "1000", "--timesteps", "100000", cwd=pilot, timeout=120)
    one_line_error(proc, "--budget", "the next run needs")
    assert not (pilot / "autopilot" / "runs").exists()


def test_steps_of_counts_whole_batches():
    from drex_opt import autopilot

    assert planning.steps_of(300_000, 16_384) == 19 * 16_384  # PufferLib trains whole batches
    assert planning.steps_of(1_000, 16_384) == 16_384
    ledger = autopilot.Ledger(100)
    ledger.spent = 60
    with pytest.raises(autopilot.BudgetSpent, match="leaves 40"):
        ledger.check(41, "x")
    ledger.check(40, "x")


@pytest.mark.slow
def test_a_generation_may_change_the_topology(trained_run, tmp_path):
    """The drone's per-agent observation and action do not depend on how many drones share
    an arena or how many arenas there are: a continuation may change both."""
    (tmp_path / "o.json").write_text(json.dumps({"env": {"num_drones": 4, "num_envs": 32}, "vec": {"num_envs": 2}}))
    proc = run_cli("train", "--config", str(trained_run / "config.json"), "--override", str(tmp_path / "o.json"),
                   "--load-model-path", str(trained_run / "model.pt"), "--timesteps", "20000",
                   "--run-dir", str(tmp_path / "next"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["status"] == "completed" and s["optimizer_state"] == "loaded"
    assert events(tmp_path / "next", "start")[0]["agents"] == 4 * 32 * 2


@pytest.mark.slow
def test_warm_and_scratch_trials_never_share_a_study(trained_run, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    warm = planning.plan(planning.StudySettings(from_run=trained_run, storage=url))
    scratch = planning.plan(planning.StudySettings(from_run=trained_run, from_scratch=True, storage=url))
    assert warm.study_name == scratch.study_name + "-warm", "the default names differ"
    study_mod._create_or_load(warm)
    forced = planning.plan(planning.StudySettings(from_run=trained_run, from_scratch=True, storage=url,
                                                  study_name=warm.study_name))
    with pytest.raises(UserError, match="exists with trials starting from .*model.pt, not fresh weights"):
        study_mod._create_or_load(forced)


@pytest.mark.slow
def test_a_lost_control_trial_is_queued_again_on_resume(tmp_path):
    """Trial 0 interrupted (or crashed): the resumed study trains the control first."""
    plan = planning.plan(planning.StudySettings(focus="improve_grip", trials=1, timesteps=300_000,
                                                storage=f"sqlite:///{tmp_path}/s.db", studies_dir=tmp_path / "st"))
    study, created = study_mod._create_or_load(plan)
    assert created
    control = study.ask()  # the enqueued baseline trial
    assert control.user_attrs["role"] == "baseline"
    study.tell(control, state=TrialState.FAIL)
    result = study_mod.run(plan)
    trials = optuna.load_study(study_name=plan.study_name, storage=plan.storage_url).trials
    assert [(t.number, t.state, t.user_attrs.get("role")) for t in trials] == [
        (0, TrialState.FAIL, "baseline"), (1, TrialState.COMPLETE, "baseline")]
    assert result.versus_baseline["baseline_trial"] == 1
    assert not study_mod.requeue_control(study, plan), "a completed control is never queued twice"
