"""Several workers, one study: PostgreSQL (and MariaDB) servers, and a journal file.

The server tests run against the servers of this machine. Where none answers they skip,
with the reason; under CI=true, where CI provides both servers, they fail instead. Every
study gets a unique name and is deleted afterwards; the fresh-database tests create and
drop their own database.

Nothing here sleeps for a fixed time: each test polls for the state it needs (a trial
running, an orphaned child gone, a heartbeat stale) and fails, naming that state, only
after a generous upper bound.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from cli_helpers import (cli_env, in_ci, missing_service, missing_service_verdict, no_training_process, run_cli,
                         start_cli, wait_for_running_trial, wait_until)

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# Under CI a server may still be starting: wait this long for it to answer before failing.
CI_SERVER_WAIT_S = 60


def _down(connect) -> str | None:
    """None when the server answers, else why not (waiting up to CI_SERVER_WAIT_S under CI)."""
    end = time.monotonic() + (CI_SERVER_WAIT_S if in_ci() else 0)
    while True:
        try:
            connect().close()
            return None
        except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if time.monotonic() >= end:
            return reason
        time.sleep(2)


def _pg():
    import psycopg

    return psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3, autocommit=True)


def _my():
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test",
                           connect_timeout=3, autocommit=True)


PG_DOWN = _down(_pg)
MY_DOWN = _down(_my)
# A test marked with a server's marker needs that server: see require_servers().
SERVERS = {"postgres": ("PostgreSQL at 127.0.0.1:5432", PG_DOWN),
           "mariadb": ("MariaDB/MySQL at 127.0.0.1:3306", MY_DOWN)}
needs_pg = pytest.mark.postgres
needs_my = pytest.mark.mariadb


def require_server(service: str, down: str | None) -> None:
    """Nothing when the server answered; else skip the test, or fail it under CI=true."""
    if down is not None:
        missing_service(service, f"no server answers ({down})")


@pytest.fixture(autouse=True)
def require_servers(request):
    for marker, (service, down) in SERVERS.items():
        if request.node.get_closest_marker(marker) is not None:
            require_server(service, down)


@pytest.mark.parametrize("ci", ["true", "", None, "false", "1"])
def test_a_missing_server_fails_in_ci_and_skips_elsewhere(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    assert in_ci() is (ci == "true")
    service = "PostgreSQL at 127.0.0.1:5432"
    with pytest.raises(expected, match=r"PostgreSQL at 127\.0\.0\.1:5432.*connection refused"):
        require_server(service, "OperationalError: connection refused")
    require_server(service, None)  # a server that answered: neither skip nor fail
    with pytest.raises(expected, match="scratch postgresql database"):
        missing_service("a scratch postgresql database", "permission denied")


def test_missing_service_verdict():
    assert missing_service_verdict("MariaDB", "refused", ci=True) == (
        "fail", "MariaDB is required when CI=true, but refused")
    assert missing_service_verdict("MariaDB", "refused", ci=False) == ("skip", "MariaDB unavailable: refused")
    assert in_ci({"CI": "true"}) and not in_ci({"CI": "false"}) and not in_ci({})


def study_args(url: str, name: str, *extra: str) -> list[str]:
    return ["study", "--focus", "improve_grip", "--storage", url, "--study-name", name, *extra]


# Upper bounds for a broken run only: every wait ends as soon as its state is reached.
WORKER_EXIT_S = 900
ORPHAN_STOP_S = 300
RUNNING_TRIAL_S = 600


def finish(procs: list) -> list[dict]:
    """Wait for each worker to exit and return its JSON result; a hung worker fails and is killed."""
    results = []
    try:
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=WORKER_EXIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker {proc.pid} did not exit within {WORKER_EXIT_S} s") from None
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def wait_for_orphan(run_dir: str) -> None:
    """The killed worker's training child stops by itself; wait for it (it competes for CPUs)."""
    wait_until(lambda: no_training_process(run_dir), ORPHAN_STOP_S,
               f"the orphaned training child of {run_dir} was still running {ORPHAN_STOP_S} s after its "
               "worker was killed")


def wait_for_stale_heartbeat(url: str, name: str, trial, grace: int) -> None:
    """Wait until Optuna's own check finds ``trial``'s heartbeat older than ``grace`` s (server clock)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=grace)
    try:
        study_id = storage.get_study_id_from_name(name)
        # The query optuna.storages.fail_stale_trials makes before a worker starts a trial.
        wait_until(lambda: trial._trial_id in storage._get_stale_trial_ids(study_id), grace + 120,
                   f"trial {trial.number}'s heartbeat never became older than the {grace} s grace period "
                   f"(checked for {grace + 120} s)")
    finally:
        storage.engine.dispose()


def assert_one_study(trials: list, workers: int) -> None:
    """Numbers 0..n-1 without gaps or duplicates, one baseline, all finished, every worker took part."""
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert sum(1 for t in trials if t.user_attrs.get("role") == "baseline") == 1
    assert all(t.state in FINISHED for t in trials), [(t.number, t.state, t.user_attrs.get("fail_reason"))
                                                      for t in trials]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == workers


@pytest.fixture
def study_name():
    """A unique study name; the study is deleted from every server URL the test appends."""
    name = f"drex-test-{uuid.uuid4().hex[:10]}"
    urls: list[str] = []
    yield name, urls
    for url in urls:
        storage = optuna.storages.RDBStorage(url)
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass  # the test failed before the study existed
        finally:
            storage.engine.dispose()


# ---------------------------------------------------------------- two workers at once
@pytest.mark.slow
@pytest.mark.parametrize("url, trials", [pytest.param(PG_URL, 2, marks=needs_pg, id="postgresql"),
                                         pytest.param(MY_URL, 1, marks=needs_my, id="mariadb")])
def test_two_workers_at_once_form_one_study(tmp_path, study_name, url, trials):
    name, urls = study_name
    urls.append(url)
    args = study_args(url, name, "--timesteps", "120000", "--trials", str(trials), "--json")
    procs = [start_cli(*args, cwd=tmp_path), start_cli(*args, cwd=tmp_path)]
    results = finish(procs)
    assert [r["trials_run"] for r in results] == [trials, trials]
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.trials) == 2 * trials
        assert_one_study(study.trials, workers=2)
        assert study.user_attrs["focus"] == "improve_grip"
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_two_processes_on_one_journal_file(tmp_path):
    url = f"journal:{tmp_path}/shared.log"
    args = study_args(url, "journal-study", "--timesteps", "120000", "--trials", "1", "--json")
    results = finish([start_cli(*args, cwd=tmp_path), start_cli(*args, cwd=tmp_path)])
    assert [r["trials_run"] for r in results] == [1, 1]
    from drex_opt.search import storage as storage_mod

    study = optuna.load_study(study_name="journal-study", storage=storage_mod.open_storage(url))
    assert len(study.trials) == 2
    assert_one_study(study.trials, workers=2)


# ---------------------------------------------------------------- starting at once on a fresh database
OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from drex_opt.search import planning, study as study_mod
url, name, ready, go = sys.argv[1:5]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
plan = planning.plan(planning.StudySettings(focus="improve_grip", storage=url, study_name=name, trials=1,
                                              timesteps=120000))
study_mod.open_study(plan)
"""


def _fresh_database(kind: str):
    """(URL of a new empty database, function that drops it); skips (fails under CI) without the privilege."""
    db = f"drex_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = _pg() if kind == "postgresql" else _my()
        if kind == "postgresql":
            conn.execute(f"CREATE DATABASE {db}")
        else:
            conn.cursor().execute(f"CREATE DATABASE {db}")
    except Exception as exc:  # noqa: BLE001
        if "conn" in locals():
            conn.close()
        missing_service(f"a scratch {kind} database", f"it cannot be created: {exc}")

    def drop() -> None:
        if kind == "postgresql":
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        else:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
        conn.close()

    if kind == "postgresql":
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", drop
    return f"mysql+pymysql://root@127.0.0.1:3306/{db}", drop


OPENERS_READY_S = 300


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=needs_pg), pytest.param("mariadb", marks=needs_my)])
def test_workers_opening_a_fresh_database_at_once(tmp_path, kind):
    """Optuna's tables, the study and the baseline trial are each created exactly once."""
    url, drop = _fresh_database(kind)
    n = 5
    go = tmp_path / "go"
    procs: list = []
    try:
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, url, "race", str(tmp_path / f"ready-{i}"),
                                   str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=tmp_path, env=cli_env()) for i in range(n)]

        def all_ready() -> bool:
            for proc in procs:
                assert proc.poll() is None, f"an opener exited before the start signal: {proc.communicate()}"
            return all((tmp_path / f"ready-{i}").exists() for i in range(n))

        wait_until(all_ready, OPENERS_READY_S, f"not all {n} openers were ready after {OPENERS_READY_S} s")
        go.touch()
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=OPENERS_READY_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"opener {proc.pid} had not opened the study {OPENERS_READY_S} s after "
                                     "the start signal") from None
            assert proc.returncode == 0, err
        storage = optuna.storages.RDBStorage(url)
        try:
            assert optuna.get_all_study_names(storage) == ["race"]
            trials = optuna.load_study(study_name="race", storage=storage).trials
            assert [(t.state, t.user_attrs.get("role")) for t in trials] == [(TrialState.WAITING, "baseline")]
        finally:
            storage.engine.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        drop()


# ---------------------------------------------------------------- a worker killed mid-trial
def _kill_mid_trial(tmp_path, url: str, name: str, env: dict):
    """Start a long trial, SIGKILL its worker, wait for the orphaned child to stop."""
    proc = start_cli(*study_args(url, name, "--timesteps", "20000000", "--trials", "1"), cwd=tmp_path, env=env)
    storage = optuna.storages.RDBStorage(url)
    try:
        trial = wait_for_running_trial(storage, name, proc, deadline_s=RUNNING_TRIAL_S)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert optuna.load_study(study_name=name, storage=storage).trials[trial.number].state == TrialState.RUNNING
        wait_for_orphan(trial.user_attrs["run_dir"])
    finally:
        if proc.poll() is None:  # the test failed before the kill
            proc.kill()
            proc.wait()
        storage.engine.dispose()
    return trial


@pytest.mark.slow
@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_pg, id="postgresql")])
def test_killed_worker_is_recovered_by_the_next_worker_on_its_host(tmp_path, study_name, _):
    name, urls = study_name
    urls.append(PG_URL)
    env = cli_env(DREX_GRACE_S="3600")  # no heartbeat verdict: the process check must do it
    killed = _kill_mid_trial(tmp_path, PG_URL, name, env)
    proc = run_cli(*study_args(PG_URL, name, "--timesteps", "120000", "--trials", "1", "--json"), cwd=tmp_path,
                   env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stale_failed"] == [killed.number]
    storage = optuna.storages.RDBStorage(PG_URL)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        stale = trials[killed.number]
        assert stale.state == TrialState.FAIL and "gone" in stale.user_attrs["fail_reason"]
        others = [t for t in trials if t.number != killed.number]
        assert len(others) == 1 and others[0].state in FINISHED
    finally:
        storage.engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_pg, id="postgresql")])
def test_killed_worker_of_another_host_is_failed_and_retried_by_heartbeat(tmp_path, study_name, _):
    name, urls = study_name
    urls.append(PG_URL)
    grace = 3
    env = cli_env(DREX_HEARTBEAT_S="1", DREX_GRACE_S=str(grace))
    killed = _kill_mid_trial(tmp_path, PG_URL, name, env)
    storage = optuna.storages.RDBStorage(PG_URL)
    try:
        # As if the worker had run on another machine: this host cannot check its process.
        worker = dict(killed.user_attrs["worker"], host="other-host")
        storage.set_trial_user_attr(killed._trial_id, "worker", worker)
        # The next worker's heartbeat check must find the trial stale before it takes a trial.
        wait_for_stale_heartbeat(PG_URL, name, killed, grace)
        proc = run_cli(*study_args(PG_URL, name, "--timesteps", "120000", "--trials", "1", "--json"), cwd=tmp_path,
                       env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["stale_failed"] == [], "not this host's trial: left to the heartbeat"
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert len(trials) == 2
        stale, retry = trials[killed.number], next(t for t in trials if t.number != killed.number)
        assert stale.state == TrialState.FAIL
        assert retry.system_attrs.get("failed_trial") == killed.number, "RetryHeartbeatStaleTrialCallback"
        assert retry.params == stale.params and retry.state in FINISHED
        assert retry.user_attrs["worker"]["host"] != "other-host", "the retry ran here"
    finally:
        storage.engine.dispose()


def test_heartbeat_settings_come_from_the_environment(monkeypatch):
    from drex_opt.search import storage as storage_mod
    from drex_opt.errors import UserError

    monkeypatch.delenv("DREX_HEARTBEAT_S", raising=False)
    monkeypatch.delenv("DREX_GRACE_S", raising=False)
    assert storage_mod.heartbeat_settings() == (storage_mod.HEARTBEAT_S, storage_mod.GRACE_S)
    monkeypatch.setenv("DREX_HEARTBEAT_S", "2")
    monkeypatch.setenv("DREX_GRACE_S", "5")
    assert storage_mod.heartbeat_settings() == (2, 5)
    for heartbeat, grace in (("0", "5"), ("x", "5"), ("5", "5")):
        monkeypatch.setenv("DREX_HEARTBEAT_S", heartbeat)
        monkeypatch.setenv("DREX_GRACE_S", grace)
        with pytest.raises(UserError):
            storage_mod.heartbeat_settings()
