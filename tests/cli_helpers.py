"""Running the real ``drex-opt`` console script from tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

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
    return wait_for_running_trials(storage, name, proc, 1, deadline_s)[0]


def no_training_process(run_dir) -> bool:
    """No training child of ``run_dir`` is alive."""
    import psutil

    needle = f"--run-dir {run_dir} "
    return not any(needle in " ".join(p.info["cmdline"] or []) + " " for p in psutil.process_iter(["cmdline"]))


def wait_for_running_trials(storage, name: str, proc: subprocess.Popen, count: int, deadline_s: float = 240) -> list:
    """``count`` RUNNING trials of study ``name`` whose training children have all reported progress."""
    import optuna
    from optuna.trial import TrialState

    end = time.time() + deadline_s
    while time.time() < end:
        assert proc.poll() is None, proc.stderr.read()
        try:
            running = optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        ready = []
        for trial in running:
            log = Path(trial.user_attrs.get("run_dir", "/nonexistent")) / "train.log"
            if log.is_file() and '"event": "progress"' in log.read_text():
                ready.append(trial)
        if len(ready) >= count:
            return ready
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} trials running with progress after {deadline_s:g} s")


def training_processes(run_dir) -> list:
    """The live training children (``python -m drex_opt.run.train``) of ``run_dir``, as psutil processes."""
    import psutil

    needle = f"--run-dir {run_dir} "
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or []) + " "
        if needle in cmdline and "drex_opt.run.train" in cmdline:
            out.append(p)
    return out


def wait_until(predicate, deadline_s: float, message: str) -> None:
    """Poll ``predicate`` until it holds; fail loudly with ``message`` after ``deadline_s``."""
    end = time.time() + deadline_s
    while not predicate():
        if time.time() > end:
            raise AssertionError(message)
        time.sleep(0.5)


def in_ci(environ=None) -> bool:
    """Whether the tests run in CI (``$CI`` is ``true``), where every service they need is provided."""
    return (os.environ if environ is None else environ).get("CI", "").strip() == "true"


def missing_service_verdict(service: str, problem: str, ci: bool) -> tuple[str, str]:
    """``("skip" | "fail", message)`` for a test whose ``service`` is unusable because of ``problem``.

    Outside CI a missing server is the machine's business: skip, with the reason. In CI
    the server is part of the setup, so its absence is a failure, never a silent skip.
    """
    if ci:
        return "fail", f"{service} is required when CI=true, but {problem}"
    return "skip", f"{service} unavailable: {problem}"


def missing_service(service: str, problem: str, environ=None) -> NoReturn:
    """Skip the running test (outside CI) or fail it (CI=true): ``service`` is unusable."""
    import pytest

    verdict, message = missing_service_verdict(service, problem, in_ci(environ))
    if verdict == "fail":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
