"""Where studies live: one storage URL for every command, opened the same way everywhere.

Resolution order: the ``--storage`` option, then ``$DREX_STORAGE``, then an embedded
SQLite file under ``studies/``. Any SQLAlchemy URL works (``postgresql://``,
``mysql+pymysql://`` ...); ``journal:PATH`` (or a path ending in ``.log``/``.jsonl``) is
Optuna's journal file, for several processes on one machine without a server.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import psutil
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from drex_opt.errors import UserError

ENV_STORAGE = "DREX_STORAGE"
DEFAULT_STORAGE = "sqlite:///studies/drex-opt.db"
# A worker that stops beating for GRACE_S is presumed dead; its trial fails and is retried once.
HEARTBEAT_S = 20
GRACE_S = 60
# Overrides (whole seconds) for clusters that want faster recovery, and for tests.
ENV_HEARTBEAT = "DREX_HEARTBEAT_S"
ENV_GRACE = "DREX_GRACE_S"
SQLITE_TIMEOUT_S = 60
# Serialises schema creation among workers starting at once on one database server.
SCHEMA_LOCK_KEY = 0x6472_6578_6F70_7400  # "drexopt" as a PostgreSQL advisory-lock key
SCHEMA_LOCK_NAME = "drex_opt_schema"
SCHEMA_LOCK_WAIT_S = 120


def storage_url(option: str | None = None) -> str:
    """The storage URL in force: option, environment variable, default."""
    return option or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


# ``scheme://user:password@host``: the password runs to the last "@" of the token.
_URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^:@/\s]*):\S*@")
# ``?password=...`` style query parameters (libpq, SQLAlchemy, MySQL drivers accept them).
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Works on a bare URL or on any text holding URLs (a command line, an error message):
    everything drex-opt stores, prints or logs about a storage goes through it. A URL
    without a password is returned unchanged.
    """
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def redact_command(argv: list[str]) -> list[str]:
    """A command line safe to store: each argument redacted (``--storage=URL`` too)."""
    return [redact(arg) for arg in argv]


def _seconds(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"${name} must be a whole number of seconds, got {raw!r}") from None
    if value < 1:
        raise UserError(f"${name} must be at least 1 second, got {value}")
    return value


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: the defaults or ``$DREX_HEARTBEAT_S``/``$DREX_GRACE_S``.

    Raises:
        UserError: a value that is not a positive whole number, or a grace period not
            longer than the interval (live workers would be declared dead).
    """
    heartbeat, grace = _seconds(ENV_HEARTBEAT, HEARTBEAT_S), _seconds(ENV_GRACE, GRACE_S)
    if grace <= heartbeat:
        raise UserError(f"the grace period ({grace} s, ${ENV_GRACE}) must be longer than the heartbeat interval "
                        f"({heartbeat} s, ${ENV_HEARTBEAT})")
    return heartbeat, grace


def journal_path(url: str) -> Path | None:
    """The journal file of a ``journal:PATH`` (or ``*.log``/``*.jsonl``) URL, else None."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if "://" not in url and url.endswith((".log", ".jsonl")):
        return Path(url)
    return None


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for other URLs and in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    db = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(db) if db and db != ":memory:" else None


def storage_file(url: str) -> Path | None:
    """The file holding the studies of a file-based storage (SQLite or journal), else None."""
    return journal_path(url) or sqlite_path(url)


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """Open the storage behind ``url``; every command opens storages through here.

    RDB storages get Optuna's heartbeat and a retry of trials whose worker died.

    Args:
        url: a SQLAlchemy URL, ``journal:PATH`` or a journal file path.
        create: create a missing SQLite or journal file (a study does). Reading commands
            pass False, so a mistyped path is refused instead of becoming an empty database.

    Raises:
        UserError: a missing file when ``create`` is False, an unknown scheme, a missing
            driver or an unreachable server.
    """
    file = storage_file(url)
    if file is not None and not create and not file.is_file():
        raise UserError(f"no storage at {file} (run drex-opt study first, or pass --storage)")
    journal = journal_path(url)
    heartbeat, grace = heartbeat_settings()
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))
        engine_kwargs: dict = {}
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite:"):
            # Threads of one process share the file; wait for the lock instead of failing.
            engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        else:
            engine_kwargs["pool_pre_ping"] = True
        with _schema_lock(url), warnings.catch_warnings():
            # Heartbeats are marked experimental; drex-opt relies on them knowingly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"storage {redact(url)}: missing database driver ({exc.name or exc})") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/OS errors all mean "cannot open"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot open storage {redact(url)}: {redact(first)}") from None


def load_existing_study(url: str, study_name: str | None) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """A study to read (export, report, dashboard) and its opened storage; creates nothing.

    ``study_name`` may be omitted when the storage holds exactly one study.

    Raises:
        UserError: no storage, no study, several studies and no name, unknown name.
    """
    opened = open_storage(url, create=False)
    names = sorted(optuna.get_all_study_names(opened))
    where = redact(url)
    if study_name is None:
        if not names:
            raise UserError(f"storage {where} holds no study")
        if len(names) > 1:
            raise UserError(f"storage {where} holds {len(names)} studies; choose one with --study-name: "
                            + ", ".join(names))
        study_name = names[0]
    elif study_name not in names:
        raise UserError(f"no study {study_name!r} in {where}; studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=opened), opened


@contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Hold a server-wide lock while Optuna creates or checks its tables.

    Optuna creates its schema without one: workers started at once on a fresh PostgreSQL
    or MySQL database fail with "duplicate key ... pg_type_typname_nsp_index" or "Table
    already exists". PostgreSQL advisory locks and MySQL named locks serialise that step;
    other databases (SQLite) need none. The lock ends with its connection, so a killed
    worker never leaves it held.
    """
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        lock, unlock = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
        params: dict = {"key": SCHEMA_LOCK_KEY}
    elif dialect in ("mysql", "mariadb"):
        lock, unlock = "SELECT GET_LOCK(:key, :wait)", "SELECT RELEASE_LOCK(:key)"
        params = {"key": SCHEMA_LOCK_NAME, "wait": SCHEMA_LOCK_WAIT_S}
    else:
        engine.dispose()
        yield
        return
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(lock), params)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(unlock), params)
    finally:
        engine.dispose()


def worker_id() -> dict:
    """This process, as recorded on the trials it runs (for stale-trial recovery)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _alive(worker: dict) -> bool:
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return True  # unknown: never fail a trial we cannot judge
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return False
    started = worker.get("started")
    return started is None or abs(proc.create_time() - started) < 1.0  # a reused pid is another process


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail RUNNING trials of this host whose worker process is gone.

    Heartbeats catch dead workers on RDB storages after a grace period; this catches them
    at once on this host, and on storages without heartbeats (the journal file).

    Args:
        study: the study to clean up.
        storage: the storage ``study`` was opened on.

    Returns:
        The numbers of the trials it failed.
    """
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not isinstance(worker, dict) or worker.get("host") != host or _alive(worker):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", "worker process gone (killed or crashed)")
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except Exception:  # noqa: BLE001 - another worker finished it first
            continue
    return failed
