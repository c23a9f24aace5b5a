"""Warm training processes: each run still gets its own process, forked from a server
that has already imported torch, PufferLib and the envs.

A cold training child spends ~2.7 s importing (torch's optimiser alone pulls in
``torch._dynamo``) before it steps an env; a study of short trials would spend most of its
time there. :class:`ForkLauncher` starts one ``multiprocessing`` forkserver with those
modules preloaded; every run is then a fresh fork of it, so isolation is unchanged:

- the child makes itself a process-group leader, so a timeout, an early stop or Ctrl-C
  kills it and its PufferLib workers as a group, exactly like a cold child;
- its stdout/stderr are a pipe to the caller (the same line protocol as a cold child);
- when the caller dies, the forkserver exits (its pipe from the caller closes) and the
  child, whose parent was the forkserver, stops itself (it checks its parent every report);
- a forkserver that died is started again by the next run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from multiprocessing import forkserver, spawn
from typing import IO

from drex_opt.run.runner import Child, thread_env

# Imported once in the forkserver; children inherit them already initialised.
PRELOAD = ["drex_opt.run.preload"]
# The caller's main script as multiprocessing names it (``init_main_from_path`` or
# ``_name``), for the server to take on (see drex_opt.run.preload.adopt_callers_main).
MAIN_ENV = "DREX_FORK_CALLER_MAIN"

_context = multiprocessing.get_context("forkserver")
_start_lock = threading.Lock()


def _child_main(writer, argv: list[str], env: dict, cwd: str) -> None:
    """In the forked child: own process group, output to the caller's pipe, then train."""
    os.setsid()
    # What a cold child's command line would be, so ps (and the owner's scripts) can tell
    # which run this process trains. It takes the memory of the server's (long) arguments
    # only, leaving the environment the process started with readable as it was.
    os.environ["SPT_NOENV"] = "1"
    from setproctitle import setproctitle

    setproctitle(" ".join([sys.executable, "-m", "drex_opt.run.train", *argv]))
    os.dup2(writer.fileno(), 1)
    os.dup2(writer.fileno(), 2)
    writer.close()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    # Default signal handling, as in a fresh process (the forkserver ignores some).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Already imported by the server (preload); importing it in the caller would import
    # PufferLib there, which writes a ``resources`` link into the working directory.
    from drex_opt.run import train

    code = 1
    try:
        code = train.main(argv)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - the caller may be gone
            pass
        os._exit(code)  # PufferLib's utilisation thread would keep the process alive


class ForkedChild:
    """A forked training child with the parts of ``subprocess.Popen`` the runner uses."""

    def __init__(self, process, stdout: IO[str]) -> None:
        self._process = process
        self.pid: int = process.pid
        self.stdout = stdout

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(["training"], timeout or 0)
        return code


class ForkLauncher:
    """Starts training children from a preloaded forkserver (see the module docstring).

    Args:
        threads: the thread cap the server starts with: BLAS libraries read it when they
            load there, once for every child. Each run's torch cap comes in its own
            environment (``run_training``'s ``threads``).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def warm_up(self) -> None:
        """Start the forkserver now (it imports in the background while the caller works)."""
        with _start_lock:
            _context.set_forkserver_preload(PRELOAD)
            saved = dict(os.environ)
            os.environ.update(thread_env(self.threads))
            prep = spawn.get_preparation_data("drex-opt-training")
            os.environ[MAIN_ENV] = json.dumps({"path": prep.get("init_main_from_path"),
                                               "name": prep.get("init_main_from_name")})
            try:
                forkserver.ensure_running()
            finally:
                os.environ.clear()
                os.environ.update(saved)

    def __call__(self, argv: list[str], env: dict) -> Child:
        """Start ``python -m drex_opt.run.train ARGV`` as a fork of the warm server."""
        self.warm_up()
        reader, writer = _context.Pipe(duplex=False)
        process = _context.Process(target=_child_main, args=(writer, argv, env, os.getcwd()),
                                   name="drex-opt-training")
        try:
            process.start()
        finally:
            writer.close()
        stdout = os.fdopen(os.dup(reader.fileno()), "r", encoding="utf-8", errors="replace")
        reader.close()
        return ForkedChild(process, stdout)
