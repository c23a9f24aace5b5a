"""Parent side of a training run: start the child, follow it live, collect the result.

The child (:mod:`drex_opt.run.train`) runs in its own process group so a crash, a hang or
Ctrl-C can never take the caller down: on a timeout, an early stop or an interrupt the
whole group (PufferLib worker processes included) is terminated. Whatever happens, the
run folder ends with a complete ``summary.json`` written atomically.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable, Optional, Protocol

from drex_opt.envs import BUILTIN_ENV, BUILTIN_ENVS, puffer
from drex_opt.errors import UserError
from drex_opt.jsonio import write_json_atomic
from drex_opt.rules import config as run_config
from drex_opt.rules import machine, unlearned
from drex_opt.run import checkpoint as checkpoints
from drex_opt.run import env_metrics, metrics
from drex_opt.run.events import parse_event


HISTORY_KEYS_PREFIXES = ("environment/",)
HISTORY_KEYS = ("agent_steps", "SPS", "uptime", "epoch", "losses/policy_loss", "losses/value_loss",
                "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance")
KILL_GRACE_S = 3.0

# Environment the owner's autopilot scripts read and write.
ENV_RUN_DIR = "PUFFER_AUTOPILOT_RUN_DIR"
ENV_RUN_ID = "PUFFER_AUTOPILOT_RUN_ID"
ENV_SUMMARY = "PUFFER_AUTOPILOT_SUMMARY"


@dataclass
class TrainResult:
    """What a finished (or failed) run left behind."""

    run_dir: Path
    summary: dict
    summary_path: Path
    history: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.summary.get("status") == "completed"


# A callback given each progress event; returning a string stops the run early with that reason.
StopRule = Callable[[dict, list], Optional[str]]


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def default_run_dir() -> Path:
    env_dir = os.environ.get(ENV_RUN_DIR)
    return Path(env_dir) if env_dir else Path("autopilot") / "runs" / utc_stamp()


def prepare_run_dir(run_dir: Path) -> Path:
    """Create the run folder; a path that cannot be a writable folder is a user error."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"run dir is not writable: {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def thread_env(threads: int | None) -> dict:
    """Variables that cap torch/BLAS threads so parallel trials share the cores."""
    if not threads:
        return {}
    n = str(int(threads))
    return {"DREX_TORCH_THREADS": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


class Child(Protocol):
    """A running training child: what :func:`run_training` needs of ``subprocess.Popen``."""

    pid: int
    stdout: IO[str]

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


#: Starts the training child with these arguments (after ``-m drex_opt.run.train``) and
#: environment, in its own process group, its stdout and stderr readable as text lines.
Launcher = Callable[[list, dict], Child]


def cold_launch(argv: list[str], env: dict) -> subprocess.Popen:
    """A fresh interpreter: ``python -m drex_opt.run.train ARGV`` (see :mod:`drex_opt.run.forkserver`)."""
    return subprocess.Popen([sys.executable, "-m", "drex_opt.run.train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True, text=True, bufsize=1, errors="replace")


def _signal_group(pid: int, sig: int) -> bool:
    """Signal the child's process group (or the child alone, before it has made its group)."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, sig)
            return True
        except ProcessLookupError:
            continue
    return False


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(proc: Child) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left.

    The group is signalled even when the child is known to have exited: its vector
    workers may not have, and a warm child's exit status can arrive before the child is
    gone (when the server that forked it died first).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(proc.pid, sig):
            return
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            return


def _compact(event: dict) -> dict:
    return {k: v for k, v in event.items()
            if k in HISTORY_KEYS or k.startswith(HISTORY_KEYS_PREFIXES)}


def run_training(
    config: dict,
    run_dir: Path,
    env_name: str = BUILTIN_ENV,
    timeout: float | None = None,
    load_model: str | Path | None = None,
    on_event: Callable[[dict], None] | None = None,
    stop_rule: StopRule | None = None,
    threads: int | None = None,
    log_mirror: Path | None = None,
    summary_copy: Path | None = None,
    extra_env: dict | None = None,
    cancel: threading.Event | None = None,
    launch: Launcher = cold_launch,
) -> TrainResult:
    """Train ``config`` (an effective, validated run config) in a child process.

    Args:
        config: the nested run config; written to ``run_dir/config.json``.
        run_dir: the run folder (created).
        env_name: a built-in env (``drone_pp``, ``drone_pp_hard``) or a PufferLib environment name.
        timeout: seconds before the child is killed (status ``timeout``).
        load_model: checkpoint to start from.
        on_event: called with every event the child reports (start/progress/final/error).
        stop_rule: called with every progress event and the history so far; a returned
            reason stops the run (status ``stopped``, the reason in ``error``).
        threads: cap on torch/BLAS threads in the child.
        log_mirror: a second file that receives the training log as it is written.
        summary_copy: a second path the summary is written to (``$PUFFER_AUTOPILOT_SUMMARY``).
        extra_env: more environment variables for the child.
        cancel: when set (from another thread), the child is stopped and the run ends
            ``failed`` with error ``interrupted``.
        launch: how the child starts: a fresh interpreter (default) or a fork of a warm
            server (:class:`drex_opt.run.forkserver.ForkLauncher`); the run is the same.

    Returns:
        The :class:`TrainResult`; ``summary["status"]`` is ``completed``, ``failed``,
        ``timeout`` or ``stopped``. KeyboardInterrupt is re-raised after the child is
        stopped and a ``failed`` summary (error ``interrupted``) is written.
    """
    run_dir = prepare_run_dir(Path(run_dir))
    config_path = write_json_atomic(run_dir / "config.json", config)
    # The run folder first: a warm child's title (what ps shows) has limited room.
    argv = ["--run-dir", str(run_dir), "--env", env_name, "--config", str(config_path)]
    if load_model:
        argv += ["--load-model", str(load_model)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **thread_env(threads), **(extra_env or {}))
    env.setdefault(ENV_RUN_DIR, str(run_dir))
    env.setdefault(ENV_RUN_ID, run_dir.name)
    follower = _Follower(run_dir, log_mirror, on_event, stop_rule)
    proc = launch(argv, env)
    try:
        follower.follow(proc, timeout, cancel)
    except KeyboardInterrupt:
        _kill_group(proc)
        follower.close()
        follower.state.update(status="failed", error="interrupted")
        _finish(run_dir, config, env_name, follower, summary_copy, load_model)
        raise
    _kill_group(proc)
    follower.close()
    follower.conclude(proc.wait())
    summary = _finish(run_dir, config, env_name, follower, summary_copy, load_model)
    return TrainResult(run_dir=run_dir, summary=summary, summary_path=run_dir / "summary.json",
                       history=follower.history)


class _Follower:
    """Reads the child's output live: the log files, the events, the stop and time limits."""

    def __init__(self, run_dir: Path, log_mirror: Path | None, on_event: Callable[[dict], None] | None,
                 stop_rule: StopRule | None) -> None:
        self.on_event, self.stop_rule = on_event, stop_rule
        self.started = time.time()
        self.timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.state: dict = {"status": None, "error": None, "final": None, "last": {}, "start": {}}
        self.history: list[dict] = []
        self.files = [open(run_dir / "train.log", "w", encoding="utf-8")]
        if log_mirror:
            self.files.append(open(log_mirror, "w", encoding="utf-8"))
        self.reader: threading.Thread | None = None

    def follow(self, proc: Child, timeout: float | None, cancel: threading.Event | None) -> None:
        """Until the child's output ends, the timeout passes, ``cancel`` is set or the stop rule fires."""
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()
        while self.state["status"] is None:
            if timeout is not None and time.time() - self.started > timeout:
                self.state.update(status="timeout", error=f"killed after the {timeout:g} s timeout")
                return
            if cancel is not None and cancel.is_set():
                self.state.update(status="failed", error="interrupted")
                return
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return
            self.take(line)

    def take(self, line: str) -> None:
        """One line of the child's output: logged, and acted on when it is an event."""
        for fh in self.files:
            fh.write(line)
            fh.flush()
        event = parse_event(line)
        if event is None:
            return
        kind = event.get("event")
        if kind == "start":
            self.state["start"] = event
        elif kind == "progress":
            self.state["last"] = event
            self.history.append(_compact(event))
            reason = self.stop_rule(event, self.history) if self.stop_rule is not None else None
            if reason:
                self.state.update(status="stopped", error=reason)
                return
        elif kind == "final":
            self.state["final"] = self.state["last"] = event
        elif kind == "error":
            self.state["error"] = event.get("error")
        if self.on_event is not None:
            self.on_event(event)

    def conclude(self, code: int) -> None:
        """The run's status from the child's exit ``code`` when nothing decided it before."""
        state = self.state
        if state["status"] is not None:
            return
        if code == 0 and state["final"] is not None:
            state["status"] = "completed"
            return
        state["status"] = "failed"
        if not state["error"]:
            state["error"] = (f"training process killed by signal {-code}" if code < 0
                              else f"training process exited with code {code}")

    def close(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=1.0)
        for fh in self.files:
            fh.close()


def _finish(run_dir: Path, config: dict, env_name: str, follower: _Follower, summary_copy: Path | None,
            load_model: str | Path | None = None) -> dict:
    """Build and atomically write ``summary.json`` (and its copy), and the checkpoint's lineage."""
    state, history = follower.state, follower.history
    last = state["final"] or state["last"] or {}
    raw = {k: v for k, v in last.items() if k not in ("event", "checkpoint")}
    # Includes the behavioral analysis; status and error explain a run that never reported.
    named = metrics.named_metrics(raw, status=state["status"], error=state["error"],
                                  metric_map=env_metrics.metric_map(env_name))
    analysis = named.pop("behavioral_analysis")
    checkpoint = (state["final"] or {}).get("checkpoint")
    started_from = None if load_model is None else str(Path(load_model).resolve())
    before = checkpoints.steps_seen(started_from)
    agent_steps = last.get("agent_steps", 0)
    if checkpoint and Path(checkpoint).is_file():
        checkpoints.write_lineage(Path(checkpoint), agent_steps, started_from)
    summary = {
        "run_id": run_dir.name,
        "timestamp": follower.timestamp,
        "seed": config.get("train", {}).get("seed"),
        "env": env_name,
        "status": state["status"],
        "error": state["error"],
        "agent_steps": agent_steps,
        "total_timesteps": config.get("train", {}).get("total_timesteps"),
        "wall_time_s": round(time.time() - follower.started, 3),
        "checkpoint": checkpoint,
        # The drone's whole training: this run continued a checkpoint that had seen
        # started_from_agent_steps (None: a checkpoint that does not say).
        "started_from": started_from,
        "started_from_agent_steps": before,
        "drone_agent_steps": None if before is None else before + agent_steps,
        "optimizer_state": state["start"].get("optimizer_state"),
        **named,
        "metrics": raw,
        "notes": state["start"].get("notes", []),
        "history": history,
        "behavioral_analysis": analysis,
    }
    write_json_atomic(run_dir / "summary.json", summary)
    if summary_copy:
        write_json_atomic(summary_copy, summary)
    return summary


def check_env_name(env_name: str) -> None:
    """A built-in env, or a foreign one that can run here (``envs.puffer.check``), else UserError.

    A PufferLib env name is looked up in its ``.ini`` files without importing PufferLib
    (which pulls torch); only ``module:Class`` is imported, to refuse it before anything runs.
    """
    if env_name in BUILTIN_ENVS:
        return
    puffer.check(env_name)
    env_metrics.declared(env_name)  # a metric map naming what no summary has is refused here


@dataclass(frozen=True)
class CheckpointCheck:
    """Whether a checkpoint can start a run, and how random its policy is."""

    problem: str | None  # why it cannot start a run of the config (None: it fits)
    entropy: float | None = None  # mean entropy of its actions on the env's first observations
    fresh_entropy: float | None = None  # the same for the policy's fresh weights

    @property
    def unlearned(self) -> str | None:
        """Why continuing this policy is worse than fresh weights (None: nothing says so)."""
        return unlearned.reason(self.entropy, self.fresh_entropy)


def check_checkpoint(config: dict, env_name: str, load_model: str | Path, timeout: float = 120.0) -> CheckpointCheck:
    """Whether ``load_model`` can start a run of ``config`` on ``env_name``, and its policy's
    entropy next to fresh weights'.

    Builds the run's env and policy in a child process (as a run would) and loads the
    weights, so a study refuses a checkpoint before any trial trains.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="drex-check-") as tmp:
        config_path = write_json_atomic(Path(tmp) / "config.json", config)
        argv = ["--run-dir", tmp, "--env", env_name, "--config", str(config_path),
                "--load-model", str(load_model), "--check-load"]
        proc = cold_launch(argv, dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return CheckpointCheck(f"checking checkpoint {load_model} took longer than {timeout:g} s")
    events = [e for e in map(parse_event, (out or "").splitlines()) if e]
    checked = [e for e in events if e.get("event") == "checked"]
    if proc.returncode == 0 and checked:
        # The child sends a finite entropy or null (train._policy_entropy).
        return CheckpointCheck(None, checked[-1].get("entropy"), checked[-1].get("fresh_entropy"))
    errors = [e["error"] for e in events if e.get("event") == "error" and e.get("error")]
    return CheckpointCheck(errors[-1] if errors else f"checking checkpoint {load_model} failed "
                           f"(exit code {proc.returncode})")


@dataclass
class TrainJob:
    """A validated ``drex-opt train`` run, ready to start: nothing has been trained yet."""

    config: dict
    run_dir: Path
    env_name: str
    timeout: float | None
    load_model: Path | None
    summary_copy: Path | None
    warnings: list[str] = field(default_factory=list)  # the brief's topology advice for this machine

    def run(self, on_event: Callable[[dict], None] | None = None) -> TrainResult:
        return run_training(self.config, self.run_dir, self.env_name, self.timeout, self.load_model,
                            on_event=on_event, summary_copy=self.summary_copy)


def prepare_training(config_path: str | Path, override_path: Path | None, timesteps: int | None, seed: int | None,
                     run_dir: Path | None, env_name: str, timeout: float | None,
                     load_model: Path | None) -> TrainJob:
    """``drex-opt train``: every input validated and the run folder made, before anything runs.

    Raises:
        UserError: a bad config, override, timeout, checkpoint, env or run folder, or a
            config this machine cannot train as written (device, precision, workers).
    """
    extra: dict = {}
    if timesteps is not None:
        extra.setdefault("train", {})["total_timesteps"] = timesteps
    if seed is not None:
        extra.setdefault("train", {})["seed"] = seed
    cfg = run_config.resolve(config_path, override_path, extra or None)
    advice = machine.check_here(cfg)
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout:g}")
    if load_model is not None and not Path(load_model).is_file():
        raise UserError(f"checkpoint not found: {load_model}")
    check_env_name(env_name)
    shrunk = topology_warning(cfg, env_name)
    target = prepare_run_dir(Path(run_dir) if run_dir else default_run_dir())
    summary_copy = Path(os.environ[ENV_SUMMARY]) if os.environ.get(ENV_SUMMARY) else None
    return TrainJob(cfg, target, env_name, timeout, load_model, summary_copy, advice + ([shrunk] if shrunk else []))


def topology_warning(cfg: dict, env_name: str) -> str | None:
    """Before a run: does it train far fewer agents than a foreign env's ``.ini`` configures?

    Read from the ``.ini`` alone (nothing imported); the run itself says it again in its
    summary, from the env it built.
    """
    if env_name in BUILTIN_ENVS:
        return None
    src = puffer.source(env_name)
    topo = puffer.topology(src, None, cfg["env"], cfg["vec"], int(cfg["train"]["total_timesteps"]))
    if topo.planned_agents is None:
        return None
    warning = puffer.shrink_warning(src, topo.planned_agents, topo.configured_agents)
    return warning.removeprefix("warning: ") if warning else None
