"""`drex-opt study` behaviours from the README's "Studies" and "From study to the next run".

Everything goes through the real console script, real PufferLib training with tiny
budgets and real SQLite storage in ``tmp_path``. Tests wait for the state they need by
polling the storage or the run folders, with generous upper bounds that fail loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.rules.objectives import OBJECTIVES

from cli_helpers import (
    ROOT,
    no_training_process,
    one_line_error,
    run_cli,
    start_cli,
    training_processes,
    wait_for_running_trial,
    wait_for_running_trials,
    wait_until,
)

NAME = "drex-improve_grip-quick"
LONG = "20000000"  # a trial that is still training when the test interrupts it
TINY = "100000"  # a few batches: progress reports and finished episodes (30k ends before any episode)
CHILD_EXIT_S = 300  # generous upper bound for a stopped study's children to be gone


def load(url, name=NAME):
    return optuna.load_study(study_name=name, storage=url)


def states_of(trials) -> dict:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def assert_children_gone(trials) -> None:
    for t in trials:
        run_dir = t.user_attrs["run_dir"]
        wait_until(lambda: no_training_process(run_dir), CHILD_EXIT_S, f"a training child of {run_dir} survived")


# ---------------------------------------------------------------- --timeout
@pytest.mark.slow
def test_timeout_stops_starting_trials_and_finishes_the_started_ones(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    timeout_s = 4.0
    proc = run_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "20", "--timesteps", TINY,
                   "--timeout", str(timeout_s), "--no-early-stopping", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    trials = load(url).get_trials()
    assert 1 <= len(trials) < 20, "the timeout ended the study before its 20 trials"
    assert result["trials_run"] == len(trials)
    assert result["states"] == states_of(trials) and "RUNNING" not in result["states"]
    assert not result["interrupted"]
    for t in trials:
        assert t.state == TrialState.COMPLETE, (t.state, t.user_attrs.get("fail_reason"))
        assert t.user_attrs["agent_steps"] >= int(TINY), "every started trial trained to its end"
    assert trials[0].user_attrs["role"] == "baseline"


# ---------------------------------------------------------------- SIGTERM
@pytest.mark.slow
def test_sigterm_fails_the_running_trial_and_the_same_command_resumes(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["study", "--focus", "improve_grip", "--storage", url, "--no-early-stopping", "--json"]
    proc = start_cli(*args, "--trials", "2", "--timesteps", LONG, cwd=tmp_path)
    trial = wait_for_running_trial(url, NAME, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["interrupted"] is True and result["states"] == {"FAIL": 1}

    trials = load(url).get_trials()
    assert [t.number for t in trials] == [trial.number] == [0], "no new trial starts after SIGTERM"
    t = trials[0]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted"
    assert_children_gone(trials)
    summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "interrupted"

    # The same command (one trial this time) resumes the same study: trial numbers continue.
    proc = run_cli(*args, "--trials", "1", "--timesteps", TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["study_name"] == NAME and result["trials_run"] == 1
    assert result["states"] == {"FAIL": 1, "COMPLETE": 1} and not result["interrupted"]
    trials = load(url).get_trials()
    assert [t.number for t in trials] == [0, 1]
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_reason"] == "interrupted"
    assert trials[1].state == TrialState.COMPLETE, trials[1].user_attrs.get("fail_reason")
    assert len(optuna.get_all_study_names(url)) == 1, "resumed, not a second study"


# ---------------------------------------------------------------- Ctrl-C with --jobs 2
@pytest.mark.slow
def test_ctrl_c_with_two_jobs_fails_both_running_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "4", "--jobs", "2",
                     "--timesteps", LONG, "--no-early-stopping", cwd=tmp_path)
    running = wait_for_running_trials(url, NAME, proc, 2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    trials = load(url).get_trials()
    assert sorted(t.number for t in trials) == sorted(t.number for t in running) == [0, 1], \
        "no new trial starts after Ctrl-C"
    for t in trials:
        assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted", t.user_attrs
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["error"] == "interrupted"
    assert_children_gone(trials)


# ---------------------------------------------------------------- missing metrics
def test_a_focus_study_of_an_env_without_drone_statistics_is_refused_before_it_trains(tmp_path):
    # puffer_pysquared logs only its reward: guessing grip, delivery and end-to-end would
    # train every trial to a "missing metrics" failure, so the study asks for evidence.
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--env", "puffer_pysquared", "--storage", url,
                   "--trials", "2", "--timesteps", "3000", "--json", cwd=tmp_path)
    one_line_error(proc, "cannot tell which of grip, delivery and end-to-end success puffer_pysquared logs",
                   "[drex.metrics]")
    assert not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_a_metric_map_makes_an_envs_own_statistic_the_objective(tmp_path):
    # The same env with its reward mapped as its score (a [drex.metrics] section layered over
    # its installed .ini): every trial completes with that one objective.
    ini = tmp_path / "pysquared.ini"
    ini.write_text("[drex.metrics]\nscore = reward\n")
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--env", "puffer_pysquared", "--env-config", str(ini),
                   "--storage", url, "--trials", "2", "--timesteps", "3000", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["objectives"] == ["score"] and result["states"] == {"COMPLETE": 2}, result
    for t in load(url, result["study_name"]).get_trials():
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert t.values == [summary["metrics"]["environment/reward"]] == [summary["score"]]


# ---------------------------------------------------------------- thread caps
@pytest.mark.skipif(shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"),
                    reason="needs taskset and CPU affinity")
def test_a_worker_pinned_to_one_cpu_gives_each_trial_one_thread():
    """Threads per trial count the CPUs the worker may use (``taskset``, a container's
    cpuset), not the machine's: two workers pinned to one CPU each must not run two threads each."""
    code = ("from drex_opt.rules import machine; from drex_opt.search.planning import StudyPlan; "
            "print(machine.usable_cpus(), StudyPlan.threads_per_trial(type('P', (), {'jobs': 1})()))")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "1"]


@pytest.mark.slow
def test_jobs_cap_each_childs_threads_at_cores_per_job(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    jobs = 2
    expected = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    proc = start_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "2", "--jobs", str(jobs),
                     "--timesteps", LONG, "--no-early-stopping", cwd=tmp_path)
    try:
        running = wait_for_running_trials(url, NAME, proc, 2)
        for t in running:
            children = training_processes(t.user_attrs["run_dir"])
            assert children, f"no training process for trial {t.number}"
            for child in children:  # the training process (and any vector workers it forked)
                env = child.environ()
                caps = {k: env.get(k) for k in ("DREX_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                "OPENBLAS_NUM_THREADS")}
                assert caps == dict.fromkeys(caps, expected), (t.number, caps)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert_children_gone(load(url).get_trials())


# ---------------------------------------------------------------- export --baseline
@pytest.mark.slow
def test_export_relative_to_another_baseline(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["study", "--focus", "improve_grip", "--storage", url, "--trials", "1", "--timesteps", TINY,
            "--no-early-stopping"]
    # A study made elsewhere holds no baseline trial: its one trial (the export's pick) is sampled.
    optuna.create_study(study_name="drex-improve_grip-quick", storage=url, directions=["maximize"] * 3)
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = load(url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    winner = study.trials[0]
    assert winner.user_attrs.get("role") is None
    quick = config.load_baseline("quick")
    used = safety.merge(quick, winner.user_attrs["overrides"])
    assert used["train"]["learning_rate"] != quick["train"]["learning_rate"]
    assert used["env"]["num_drones"] != quick["env"]["num_drones"]

    # B: the trial's own learning rate and arena topology (so those are not changes against
    # B), other value-function settings, fewer vectorised envs and another budget and seed.
    b = json.loads((ROOT / "autopilot/configs/baseline_quick.json").read_text())
    b["train"]["learning_rate"] = used["train"]["learning_rate"]
    b["env"]["num_drones"], b["env"]["num_envs"] = used["env"]["num_drones"], used["env"]["num_envs"]
    b["train"]["vf_coef"] = 1.0
    b["vec"]["num_envs"] = 2
    b["train"]["total_timesteps"], b["train"]["seed"] = 1_000_000, 42
    for key in safety.DERIVED:
        b["train"][key] = safety.derive_batch_sizes(b)["batch_size"]
    b_path = tmp_path / "b.json"
    b_path.write_text(json.dumps(b))
    b_cfg = config.load_baseline(b_path)

    out = tmp_path / "next_config.json"
    proc = run_cli("export", "--storage", url, "--baseline", str(b_path), "--out", str(out),
                   "--notes", str(tmp_path / "notes.txt"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["trial"] == winner.number
    proposal = json.loads(out.read_text())
    assert proposal == result["overrides"]
    flat = {f"{s}.{k}": v for s, values in proposal.items() for k, v in values.items()}
    # equal to B's value: left out, although it differs from the study's baseline
    for key in ("train.learning_rate", "env.num_drones", "env.num_envs"):
        assert key not in flat, (key, proposal)
    # different from B: included, although equal to the study's baseline
    assert flat["train.vf_coef"] == quick["train"]["vf_coef"] == 2.0
    assert flat["vec.num_envs"] == quick["vec"]["num_envs"] == 4
    # the study's budget and seed are not exported (B's own apply)
    assert "train.total_timesteps" not in flat and "train.seed" not in flat
    # every other key of the run it describes: merged onto B, the proposal is the trial's configuration
    merged = safety.merge(b_cfg, proposal)
    for section, values in used.items():
        for key, value in values.items():
            if (section, key) not in (("train", "total_timesteps"), ("train", "seed")):
                assert merged[section][key] == value, (section, key)
    # derived batch sizes consistent with B's topology plus the proposal
    size = safety.derive_batch_sizes(merged)["batch_size"]
    assert size == (b["env"]["num_envs"] * b["env"]["num_drones"] * quick["vec"]["num_envs"]
                    * used["train"]["bptt_horizon"])
    assert all(proposal["train"][key] == size for key in safety.DERIVED)
    assert safety.validate(proposal, b_cfg) == []
    proc = run_cli("validate", str(out), "--baseline", str(b_path), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["valid"] is True

    # Against the study's own baseline, the same trial exports other keys.
    proc = run_cli("export", "--storage", url, "--dry-run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    own = json.loads(proc.stdout)["overrides"]
    assert own["train"]["learning_rate"] == used["train"]["learning_rate"]
    assert "vf_coef" not in own["train"] and "vec" not in own


# ---------------------------------------------------------------- $DREX_STORAGE
@pytest.mark.slow
def test_drex_storage_is_the_default_storage_of_study_export_and_report(tmp_path):
    url = f"sqlite:///{tmp_path}/from-env.db"
    env = {"DREX_STORAGE": url}
    proc = run_cli("study", "--focus", "improve_grip", "--trials", "1", "--timesteps", TINY, "--json",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["storage"] == url
    study = load(url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    default_db = tmp_path / "studies" / "drex-opt.db"
    assert not default_db.exists()

    out = tmp_path / "next_config.json"
    proc = run_cli("export", "--out", str(out), "--notes", str(tmp_path / "notes.txt"), "--json",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["study_name"] == NAME and result["trial"] == 0 and out.is_file()

    report_dir = tmp_path / "report"
    proc = run_cli("report", "--out", str(report_dir), "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert NAME in (report_dir / "report.md").read_text()
    assert not default_db.exists()

    # without the variable the same commands do not find the study
    proc = run_cli("export", "--out", str(tmp_path / "other.json"), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and NAME not in proc.stderr


# ---------------------------------------------------------------- a failing repeat seed
@pytest.mark.slow
def test_a_crashing_repeat_seed_is_left_out_of_the_repeats(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    seed = 5
    # run_repeats: (seed + 7919 * k + trial number) % 2_147_483_647; trial 0 is the only trial
    crashing, kept = seed + 7919 * 1, seed + 7919 * 2
    proc = run_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "1", "--repeats", "2",
                   "--seed", str(seed), "--timesteps", TINY, "--json", cwd=tmp_path,
                   env={"DREX_INJECT_FAULT": "crash", "DREX_INJECT_FAULT_SEEDS": str(crashing)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert not result["interrupted"] and result["states"] == {"COMPLETE": 1}
    study = load(url)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE

    # the crash really happened, in the repeat with that seed only
    crashed = tmp_path / "studies" / NAME / f"trial-0-seed-{crashing}"
    assert '"event": "fault"' in (crashed / "train.log").read_text()
    summary = json.loads((crashed / "summary.json").read_text())
    assert summary["status"] == "failed" and "injected crash" in summary["error"]
    good = json.loads((tmp_path / "studies" / NAME / f"trial-0-seed-{kept}" / "summary.json").read_text())
    assert good["status"] == "completed"

    record = study.user_attrs["repeats:0"]
    assert record == result["repeats"]["0"]
    assert record["seeds"] == [seed, kept] and crashing not in record["seeds"]
    assert record["values"][0] == list(trial.values)
    assert record["values"][1] == [good[name] for name in OBJECTIVES]
    for i in range(3):
        assert record["mean"][i] == pytest.approx((record["values"][0][i] + record["values"][1][i]) / 2)
    assert list(result["pareto"][0]["means"].values()) == pytest.approx(record["mean"])
