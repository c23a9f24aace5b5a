"""Study trials fork from a warm server (torch and PufferLib already imported), one
process per trial as before: the failure semantics of a cold child hold, and a server
lost mid-trial fails that trial only.

Crash, NaN, hang, SIGKILL of the study and Ctrl-C are tested through studies in
``test_study.py``/``test_study_behaviours.py``, which now run on warm children; this file
checks that they really are warm children and what happens when the server dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from drex_opt.run import runner
from drex_opt.run.forkserver import ForkLauncher

from cli_helpers import no_training_process, start_cli, training_processes, wait_for_running_trial, wait_until

NAME = "drex-improve_grip-quick"


def warm_server_of(proc: psutil.Process) -> psutil.Process:
    parent = proc.parent()
    assert parent is not None and "forkserver" in " ".join(parent.cmdline()), parent
    return parent


@pytest.mark.slow
def test_trials_are_forks_of_a_warm_server_in_their_own_process_group(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "1",
                     "--timesteps", "20000000", "--no-early-stopping", cwd=tmp_path)
    try:
        trial = wait_for_running_trial(url, NAME, proc)
        [child] = training_processes(trial.user_attrs["run_dir"])  # found by its command line
        server = warm_server_of(child)
        assert server.parent().pid == proc.pid, "the server belongs to this study"
        assert os.getpgid(child.pid) == child.pid, "the trial leads its own process group"
        assert child.cpu_times().user < 60
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 130
    wait_until(lambda: no_training_process(trial.user_attrs["run_dir"]), 120, "the trial survived its study")
    wait_until(lambda: not server.is_running(), 60, "the warm server survived its study")


@pytest.mark.slow
def test_a_server_lost_mid_trial_fails_that_trial_and_the_study_goes_on(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start_cli("study", "--focus", "improve_grip", "--storage", url, "--trials", "2",
                     "--timesteps", "1500000", "--no-early-stopping", "--json", cwd=tmp_path)
    try:
        first = wait_for_running_trial(url, NAME, proc)
        [child] = training_processes(first.user_attrs["run_dir"])
        server = warm_server_of(child)
        server.kill()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    trials = optuna.load_study(study_name=NAME, storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "gone" in trials[0].user_attrs["fail_reason"], trials[0].user_attrs["fail_reason"]
    assert not child.is_running(), "the orphaned trial stopped itself"
    # the next trial forked from a new server
    assert trials[1].user_attrs["status"] == "completed"


def test_a_warm_child_trains_with_the_callers_environment_and_reports_failures(tmp_path):
    """The launcher through the runner: the same summary, events and environment as a cold child."""
    from drex_opt.rules import config

    launch = ForkLauncher(threads=1)
    cfg = config.resolve("quick", extra={"train": {"total_timesteps": 20000}})
    events = []
    result = runner.run_training(cfg, tmp_path / "run", launch=launch, on_event=events.append,
                                 extra_env={runner.ENV_RUN_ID: "probe"})
    assert result.summary["status"] == "completed", result.summary["error"]
    start = next(e for e in events if e["event"] == "start")
    assert start["autopilot_env"][runner.ENV_RUN_ID] == "probe"
    assert (tmp_path / "run" / "model.pt").is_file()

    # a child that fails at start: its error and exit code come back as from a cold child
    bad = runner.run_training(cfg, tmp_path / "bad", launch=launch, load_model=tmp_path / "run" / "config.json")
    assert bad.summary["status"] == "failed" and bad.summary["error"]
    assert bad.summary["behavioral_analysis"]["next_focus"] == "fix_run"


CALLER = '''
import sys
if __name__ != "__main__":  # multiprocessing re-running this script in a child
    with open({marker!r}, "a") as fh:
        fh.write(__name__ + "\\n")
else:
    from drex_opt.run.forkserver import ForkLauncher

    child = ForkLauncher(threads=1)(["--config", {missing!r}, "--run-dir", {run!r}], {{"PATH": "/usr/bin"}})
    out = child.stdout.read()
    sys.exit(0 if child.wait(60) != 0 and "missing.json" in out else 3)
'''


@pytest.mark.parametrize("how", ["path", "module"])
def test_a_forked_child_does_not_rerun_the_callers_main_script(tmp_path, how):
    """Each child would otherwise run the caller's script again (for drex-opt, its CLI: ~0.17 s a trial)."""
    marker = tmp_path / "main-ran"
    (tmp_path / "caller.py").write_text(CALLER.format(marker=str(marker), missing=str(tmp_path / "missing.json"),
                                                      run=str(tmp_path / "run")))
    argv = [sys.executable, str(tmp_path / "caller.py")] if how == "path" else [sys.executable, "-m", "caller"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path])))
    assert proc.returncode == 0, proc.stderr[-2000:]  # the child ran and failed on the missing config
    assert not marker.exists(), f"the caller's script ran again in the child as {marker.read_text()!r}"
