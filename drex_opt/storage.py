"""Where studies live: one storage URL for every command, opened the same way everywhere.

Resolution order: the ``--storage`` option, then ``$DREX_STORAGE``, then an embedded
SQLite file under ``studies/``. Any SQLAlchemy URL works (``postgresql://``,
``mysql+pymysql://`` ...); ``journal:PATH`` (or a path ending in ``.log``/``.jsonl``) is
Optuna's journal file, for several processes on one machine without a server.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from drex_opt.errors import UserError

if TYPE_CHECKING:
    import optuna

ENV_STORAGE = "DREX_STORAGE"
DEFAULT_STORAGE = "sqlite:///studies/drex-opt.db"
# A worker that stops beating for GRACE_S is presumed dead; its trial fails and is retried once.
HEARTBEAT_S = 20
GRACE_S = 60
SQLITE_TIMEOUT_S = 60


def storage_url(option: str | None = None) -> str:
    """The storage URL in force: option, environment variable, default."""
    return option or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if "://" not in url and url.endswith((".log", ".jsonl")):
        return Path(url)
    return None


def open_storage(url: str) -> "optuna.storages.BaseStorage":
    """Open (and create if needed) the storage behind ``url``.

    RDB storages get Optuna's heartbeat and a retry of trials whose worker died.

    Raises:
        UserError: an unknown scheme, a missing driver or an unreachable server.
    """
    import warnings

    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    # Heartbeats and metric names are marked experimental; drex-opt relies on them knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    journal = _journal_path(url)
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))
        engine_kwargs: dict = {}
        if url.startswith("sqlite:///"):
            db = Path(url[len("sqlite:///"):])
            if str(db) not in ("", ":memory:"):
                db.parent.mkdir(parents=True, exist_ok=True)
            # Threads of one process share the file; wait for the lock instead of failing.
            engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        else:
            engine_kwargs["pool_pre_ping"] = True
        return RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"storage {redact(url)}: missing database driver ({exc.name or exc})") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/OS errors all mean "cannot open"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot open storage {redact(url)}: {first}") from None
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def worker_id() -> dict:
    """This process, as recorded on the trials it runs (for stale-trial recovery)."""
    info = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import psutil

        info["started"] = psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - psutil is optional here
        pass
    return info


def _alive(worker: dict) -> bool:
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return True  # unknown: never fail a trial we cannot judge
    try:
        import psutil

        proc = psutil.Process(pid)
        started = worker.get("started")
        return started is None or abs(proc.create_time() - started) < 1.0  # a reused pid is another process
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends
        return False


def fail_stale_trials(study: "optuna.Study") -> list[int]:
    """Fail RUNNING trials of this host whose worker process is gone.

    Heartbeats catch dead workers on RDB storages after a grace period; this catches them
    at once on this host, and on storages without heartbeats (the journal file).

    Returns:
        The numbers of the trials it failed.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not isinstance(worker, dict) or worker.get("host") != host or _alive(worker):
            continue
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker process gone (killed or crashed)")
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except Exception:  # noqa: BLE001 - another worker finished it first
            continue
    return failed
