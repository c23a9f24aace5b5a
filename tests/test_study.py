"""`drex-opt study`: real Optuna storage, real PufferLib trials, tiny budgets."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.search import spaces
from drex_opt.rules.objectives import OBJECTIVES
from drex_opt.search import planning
from drex_opt.search import trial as trial_mod
from drex_opt.errors import UserError

from cli_helpers import no_training_process, one_line_error, run_cli, start_cli, wait_for_running_trial, wait_until

NAME = "drex-improve_grip-quick"






def load(url, name=NAME):
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.slow
def test_study_end_to_end_resume_and_continue(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["study", "--focus", "improve_grip", "--timesteps", "120000", "--storage", url, "--seed", "5", "--json"]
    proc = run_cli(*args, "--trials", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["study_name"] == NAME and result["trials_run"] == 3
    assert sum(result["states"].values()) == 3

    study = load(url)
    assert study.metric_names == list(OBJECTIVES)
    assert study.user_attrs["focus"] == "improve_grip" and "study" in study.user_attrs["command"]
    assert study.user_attrs["drex_opt"]
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    base = config.load_baseline("quick")
    # trial 0 is the baseline: its recorded params are the baseline's values
    assert trials[0].user_attrs["role"] == "baseline"
    for name, value in trials[0].params.items():
        section, key = name.split(".")
        assert value == base[section][key]
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t.user_attrs.get("fail_reason")
        overrides = t.user_attrs["overrides"]
        assert safety.validate(overrides, base) == []
        flat = {f"{s}.{k}": v for s, vals in overrides.items() for k, v in vals.items()}
        assert all(flat[name] == value for name, value in t.params.items()), "params are the values used"
        assert flat["train.total_timesteps"] == 120000 and flat["train.seed"] == 5
        assert t.user_attrs["agent_steps"] >= 120000 or t.state == TrialState.PRUNED
        assert t.user_attrs["sps"] > 0 and t.user_attrs["behavioral_analysis"]["next_focus"] in spaces.FOCI
        assert (Path(t.user_attrs["run_dir"]) / "summary.json").is_file()
        if t.state == TrialState.COMPLETE:
            assert len(t.values) == 3 and all(0.0 <= v <= 1.0 for v in t.values)

    # the same command resumes the study: new trials, the baseline is not enqueued again
    proc = run_cli(*args, "--trials", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = load(url).get_trials()
    assert len(trials) == 4
    assert sum(1 for t in trials if t.user_attrs.get("role") == "baseline") == 1

    # "continue" narrows the previous focus's space around its best trial
    plan = planning.plan(planning.StudySettings(focus="continue", storage=url))
    assert plan.space_focus == "improve_grip" and plan.study_name == "drex-continue-quick"
    wide = spaces.load("improve_grip")
    for name, p in plan.space.params.items():
        if p.type != "categorical":
            assert wide.params[name].low <= p.low < p.high <= wide.params[name].high


@pytest.mark.slow
@pytest.mark.parametrize("fault, extra, reason", [
    ("crash", [], "injected crash"),
    ("nan", [], "NaN"),
    ("hang", ["--trial-timeout", "15"], "timeout"),
])
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, fault, extra, reason):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--timesteps", "2000000", "--trials", "2", "--storage", url,
                   "--json", *extra, cwd=tmp_path, env={"DREX_INJECT_FAULT": fault})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["states"] == {"FAIL": 2}
    for trial in load(url).get_trials():
        assert trial.state == TrialState.FAIL
        assert reason in trial.user_attrs["fail_reason"]
        assert no_training_process(trial.user_attrs["run_dir"])


@pytest.mark.slow
def test_sigkill_of_a_worker_then_resume(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["study", "--focus", "improve_grip", "--storage", url, "--trials", "1"]
    proc = start_cli(*args, "--timesteps", "20000000", cwd=tmp_path)
    trial = wait_for_running_trial(url, NAME, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load(url).trials[trial.number].state == TrialState.RUNNING  # left behind
    wait_until(lambda: no_training_process(trial.user_attrs["run_dir"]), 300,
               "the orphaned child never stopped by itself")
    proc = run_cli(*args, "--timesteps", "120000", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stale_failed"] == [trial.number]
    stale = load(url).trials[trial.number]
    assert stale.state == TrialState.FAIL and "gone" in stale.user_attrs["fail_reason"]
    assert result["states"].get("COMPLETE", 0) + result["states"].get("PRUNED", 0) == 1


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_stops_the_child(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "3",
                     "--timesteps", "20000000", cwd=tmp_path)
    trial = wait_for_running_trial(url, NAME, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    t = load(url).trials[trial.number]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted"
    assert len(load(url).trials) == 1, "no new trial starts after Ctrl-C"
    assert no_training_process(trial.user_attrs["run_dir"])
    summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "interrupted"


@pytest.mark.slow
def test_two_jobs_run_trials_at_once(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "2", "--jobs", "2",
                   "--timesteps", "150000", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    a, b = load(url).get_trials()
    assert a.state == b.state == TrialState.COMPLETE
    assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete, "overlapping trials"
    assert a.params != b.params


@pytest.mark.slow
def test_early_stopping_prunes_a_run_that_never_grips(tmp_path):
    """Real storage, real training, real rule; the study's references are planted trials."""
    url = f"sqlite:///{tmp_path}/s.db"
    steps = 800_000
    study = optuna.create_study(study_name=NAME, storage=url, directions=["maximize"] * 3)
    curve = [(f / 10, 0.9, 0.9) for f in range(1, 11)]
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(
            values=[0.9, 0.5, 0.5], user_attrs={"curve": curve, "overrides": {"train": {"total_timesteps": steps}}}))
    proc = run_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "1",
                   "--timesteps", str(steps), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trial = load(url).trials[-1]
    assert trial.state == TrialState.PRUNED, trial.user_attrs.get("fail_reason")
    assert "median" in trial.user_attrs["prune_reason"]
    summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["agent_steps"] < steps


# ---------------------------------------------------------------- planning (no training)
def write_summary(path: Path, **inputs) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    data = {"grip_success": inputs.pop("grip", 0.0), "delivery_success": inputs.pop("deliv", 0.0),
            "end_to_end_success": inputs.pop("e2e", 0.0), "metrics_extended": inputs}
    (path / "summary.json").write_text(json.dumps(data))
    return path


def test_from_run_takes_focus_and_critical_means_diagnostic_budget(tmp_path):
    run = write_summary(tmp_path / "run", grip_attempts=0.0, hover_efficiency=0.0, collision_rate=0.0)
    plan = planning.plan(planning.StudySettings(from_run=run, storage=f"sqlite:///{tmp_path}/s.db",
                                                from_scratch=True))
    assert plan.focus == "diagnostic_grip" and plan.severity == "critical"
    diag = spaces.load("diagnostic_grip").budget_for("quick")
    assert plan.timesteps == diag.timesteps

    run = write_summary(tmp_path / "carry", grip=0.6, deliv=0.05, grip_attempts=0.9, hover_efficiency=0.4)
    plan = planning.plan(planning.StudySettings(from_run=run, storage=f"sqlite:///{tmp_path}/s.db",
                                                from_scratch=True))
    assert plan.focus == "improve_carrying" and plan.severity == "ok"
    assert plan.timesteps == spaces.load("improve_carrying").budget_for("quick").timesteps
    assert plan.study_name == "drex-improve_carrying-quick"


def test_options_override_the_budget_and_name_is_stable(tmp_path):
    s = planning.StudySettings(focus="improve_carrying", trials=2, timesteps=12345, baseline="full", seed=9)
    a, b = planning.plan(s), planning.plan(s)
    assert a.study_name == b.study_name == "drex-improve_carrying-full"
    assert (a.trials, a.timesteps, a.seed) == (2, 12345, 9)
    assert a.baseline["train"]["total_timesteps"] == config.load_baseline("full")["train"]["total_timesteps"]


def test_keep_agents_scales_arenas_when_drones_are_searched():
    base = config.load_baseline("quick")
    proposal = {"env": {"num_drones": 4}}
    trial_mod.keep_agents(proposal, base)
    agents = base["env"]["num_envs"] * base["env"]["num_drones"]
    assert proposal["env"]["num_envs"] * 4 == agents


@pytest.mark.parametrize("args, fragment", [
    (["--focus", "nonsense"], "unknown focus"),
    (["--focus", "improve_grip", "--from-run", "x"], "exactly one"),
    ([], "exactly one"),
    (["--focus", "improve_grip", "--trials", "0"], "--trials"),
    (["--focus", "improve_grip", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
    (["--focus", "improve_grip", "--storage", "nosuchdb://x"], "storage"),
    (["--focus", "improve_grip", "--env", "puffer_nonexistent"], "unknown env"),
    (["--focus", "improve_grip", "--sampler", "grid"], "--sampler"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    one_line_error(run_cli("study", *args, cwd=tmp_path, timeout=60), fragment)


def test_plan_refuses_bad_values_before_anything_runs(tmp_path):
    with pytest.raises(UserError):
        planning.plan(planning.StudySettings(focus="improve_grip", timeout=-1))
    with pytest.raises(UserError):
        planning.plan(planning.StudySettings(focus="improve_grip", seed=-3))
    assert not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_repeats_retrain_the_pareto_front_with_new_seeds(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "2", "--repeats", "1",
                   "--timesteps", "120000", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    study = load(url)
    front = {t.number for t in study.best_trials}
    assert result["repeats"] and {int(n) for n in result["repeats"]} <= front
    for number, record in result["repeats"].items():
        assert study.user_attrs[f"repeats:{number}"] == record
        assert len(record["seeds"]) == 2 and len(set(record["seeds"])) == 2
        assert record["values"][0] == list(study.trials[int(number)].values)
        for i in range(3):
            column = [v[i] for v in record["values"]]
            assert record["mean"][i] == pytest.approx(sum(column) / 2)
    picked = {p["number"]: p for p in result["pareto"]}
    for number, record in result["repeats"].items():
        assert list(picked[int(number)]["means"].values()) == pytest.approx(record["mean"])


def test_continue_without_history_narrows_the_broadest_space_around_the_baseline(tmp_path):
    plan = planning.plan(planning.StudySettings(focus="continue", storage=f"sqlite:///{tmp_path}/s.db"))
    assert plan.space_focus == "optimize_performance"
    base = config.load_baseline("quick")
    wide = spaces.load("optimize_performance")
    lr = plan.space.params["train.learning_rate"]
    assert wide.params["train.learning_rate"].low <= lr.low <= base["train"]["learning_rate"] <= lr.high
    assert lr.high - lr.low < wide.params["train.learning_rate"].high - wide.params["train.learning_rate"].low


def _largest_trial_steps(plan):
    """Pinned from the brief and PufferLib: a batch is all agents × bptt_horizon, a run trains
    whole batches, and a trial may sample the space's longest horizon."""
    import math

    base = plan.baseline
    agents = base["env"]["num_envs"] * base["env"]["num_drones"] * base["vec"]["num_envs"]
    spec = plan.space.params.get("train.bptt_horizon")
    horizons = [base["train"]["bptt_horizon"]] + ([] if spec is None else [*(spec.choices or []), spec.high or 0])
    batch = agents * max(horizons)
    return math.ceil(plan.timesteps / batch) * batch


def test_a_budget_runs_the_trials_that_fit_and_drops_repeats_that_do_not(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    free = planning.plan(planning.StudySettings(focus="improve_carrying", storage=url, repeats=1))
    per_trial = _largest_trial_steps(free)
    assert free.trials > 3 and free.repeats == 1
    fitted = planning.plan(planning.StudySettings(focus="improve_carrying", storage=url, repeats=1,
                                                  budget=3 * per_trial + per_trial // 2))
    assert fitted.trials == 3 and fitted.repeats == 0, "3 trials fit; their seed repeats would not"
    roomy = planning.plan(planning.StudySettings(focus="improve_carrying", storage=url, repeats=1, trials=2,
                                                 budget=10 * per_trial))
    assert (roomy.trials, roomy.repeats) == (2, 1), "a budget never adds trials, and keeps repeats that fit"
    with pytest.raises(UserError, match="--budget"):
        planning.plan(planning.StudySettings(focus="improve_carrying", storage=url, budget=2 * per_trial - 1))


def test_a_budget_too_small_for_two_trials_is_one_line_and_nothing_is_made(tmp_path):
    one_line_error(run_cli("study", "--focus", "improve_grip", "--budget", "1000", "--storage",
                           f"sqlite:///{tmp_path}/s.db", cwd=tmp_path, timeout=60), "--budget", "two trials")
    assert not (tmp_path / "studies").exists()
    with pytest.raises(UserError, match="--budget"):
        planning.plan(planning.StudySettings(focus="improve_grip", budget=0))


@pytest.mark.slow
def test_a_budgeted_study_trains_no_more_than_its_budget(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    plan = planning.plan(planning.StudySettings(focus="improve_grip", storage=f"sqlite:///{tmp_path}/probe.db",
                                                timesteps=40_000))
    budget = 2 * _largest_trial_steps(plan) + 1
    proc = run_cli("study", "--focus", "improve_grip", "--timesteps", "40000", "--budget", str(budget),
                   "--storage", url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trials_run"] == 2
    trained = sum(json.loads(p.read_text())["agent_steps"] for p in (tmp_path / "studies").glob("*/*/summary.json"))
    assert 0 < trained <= budget


def test_the_sampler_is_tpe_unless_random_is_asked_for(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    tpe = planning.plan(planning.StudySettings(focus="improve_grip", storage=url)).make_sampler()
    assert isinstance(tpe, optuna.samplers.TPESampler)
    rnd = planning.plan(planning.StudySettings(focus="improve_grip", storage=url, sampler="random")).make_sampler()
    assert isinstance(rnd, optuna.samplers.RandomSampler)


@pytest.mark.slow
def test_a_random_sampler_study_keeps_the_space_and_the_control(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--timesteps", "40000", "--trials", "2", "--sampler", "random",
                   "--no-early-stopping", "--repeats", "0", "--storage", url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = load(url)
    assert study.user_attrs["sampler"] == "random"
    control, other = study.get_trials()
    assert control.user_attrs["role"] == "baseline" and other.user_attrs.get("role") is None
    assert set(other.params) == set(spaces.load("improve_grip").params)
    assert control.state == TrialState.COMPLETE, control.user_attrs
