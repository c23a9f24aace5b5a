"""Running the real ``drex-opt`` console script from tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "drex-opt")


def cli_env(**extra: str) -> dict:
    """This environment without drex-opt's and the autopilot's variables, plus ``extra``.

    A wide terminal keeps rich's table cells on one line.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DREX_", "PUFFER_AUTOPILOT_"))}
    env["COLUMNS"] = "160"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | str = ROOT, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, env=cli_env(**(env or {})),
                          timeout=timeout)


def start_cli(*args: str, cwd: Path | str = ROOT, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=cli_env(**(env or {})))


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert exit code 2 with a single ``error:`` line naming ``fragments``; return the line."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def wait_for_running_trial(storage, name: str, proc: subprocess.Popen, deadline_s: float = 180):
    """The RUNNING trial of study ``name`` once its training child has reported progress."""
    import optuna
    from optuna.trial import TrialState

    end = time.time() + deadline_s
    while time.time() < end:
        assert proc.poll() is None, proc.stderr.read()
        try:
            running = optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        for trial in running:
            log = Path(trial.user_attrs.get("run_dir", "/nonexistent")) / "train.log"
            if log.is_file() and '"event": "progress"' in log.read_text():
                return trial
        time.sleep(0.5)
    raise AssertionError("no trial started")


def no_training_process(run_dir) -> bool:
    """No training child of ``run_dir`` is alive."""
    import psutil

    needle = f"--run-dir {run_dir} "
    return not any(needle in " ".join(p.info["cmdline"] or []) + " " for p in psutil.process_iter(["cmdline"]))
