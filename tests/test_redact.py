"""Storage passwords never reach the study, the dashboard, the console or a message."""

from __future__ import annotations

import json
import uuid

import optuna
import pytest

from drex_opt.search import storage as storage_mod
from drex_opt.errors import UserError

from cli_helpers import missing_service, run_cli

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://drex:{SECRET}@db.example:5432/studies", "postgresql://drex:***@db.example:5432/studies"),
    (f"postgresql+psycopg://drex:{SECRET}@10.0.0.1/db", "postgresql+psycopg://drex:***@10.0.0.1/db"),
    (f"mysql+pymysql://root:{SECRET}@127.0.0.1:3306/test", "mysql+pymysql://root:***@127.0.0.1:3306/test"),
    # an "@" inside the password: everything up to the host's "@" is the password
    (f"postgresql://drex:{SECRET}@x@db/studies", "postgresql://drex:***@db/studies"),
    (f"postgresql://db/studies?user=drex&password={SECRET}", "postgresql://db/studies?user=drex&password=***"),
    ("postgresql://drex@db/studies", "postgresql://drex@db/studies"),
    ("sqlite:///studies/drex-opt.db", "sqlite:///studies/drex-opt.db"),
    ("journal:studies/drex.log", "journal:studies/drex.log"),
])
def test_redact_urls(url, shown):
    assert storage_mod.redact(url) == shown


def test_redact_command_line_in_both_option_forms():
    argv = ["drex-opt", "study", "--storage", f"postgresql://u:{SECRET}@h/db", f"--storage=mysql://u:{SECRET}@h/db"]
    redacted = storage_mod.redact_command(argv)
    assert SECRET not in " ".join(redacted)
    assert redacted[:3] == argv[:3] and redacted[3] == "postgresql://u:***@h/db"


def test_an_unreachable_storage_error_hides_the_password():
    # nothing listens on port 1: the error names the storage without its password
    with pytest.raises(UserError) as exc:
        storage_mod.open_storage(f"postgresql+psycopg://drex:{SECRET}@127.0.0.1:1/db?connect_timeout=2")
    assert SECRET not in str(exc.value) and "drex:***@127.0.0.1:1" in str(exc.value)


def _postgres_url(password: str) -> str:
    # The local server trusts local connections, so any password is accepted and ignored.
    return f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/test"


def _server_up() -> str | None:
    try:
        import psycopg

        psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot be used
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


@pytest.mark.slow
@pytest.mark.postgres
def test_a_study_on_a_password_url_stores_and_prints_no_password(tmp_path):
    down = _server_up()
    if down is not None:
        missing_service("PostgreSQL at 127.0.0.1:5432", down)
    url = _postgres_url(SECRET)
    name = f"redact-{uuid.uuid4().hex[:8]}"
    proc = run_cli("study", "--focus", "diagnostic_grip", "--trials", "1", "--timesteps", "100000",
                   "--storage", url, "--study-name", name, "--json", cwd=tmp_path)
    try:
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["storage"] == _postgres_url("***")
        study = optuna.load_study(study_name=name, storage=url)
        assert "--storage " + _postgres_url("***") in study.user_attrs["command"]
        storage = optuna.storages.RDBStorage(url)
        stored = [study.user_attrs, storage.get_study_system_attrs(storage.get_study_id_from_name(name))]
        for trial in study.get_trials():
            stored += [trial.user_attrs, trial.system_attrs]
        text = json.dumps(stored, default=str)
        assert SECRET not in text
        # the dashboard's study note (kept in the study's system attributes) shows the command
        assert _postgres_url("***") in text
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".log", ".md", ".txt"):
                assert SECRET not in path.read_text(errors="replace"), path
        # reading commands print it redacted too
        report = run_cli("report", "--storage", url, "--study-name", name, "--json", cwd=tmp_path)
        assert report.returncode == 0, report.stderr
        assert SECRET not in report.stdout + report.stderr
    finally:
        optuna.delete_study(study_name=name, storage=url)
