"""`drex-opt dashboard` and the notes and run files trials carry into optuna-dashboard.

A real tiny study, then the real server in a subprocess, read through its HTTP API.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from drex_opt.rules.objectives import OBJECTIVES
from drex_opt.search import dashboard

from cli_helpers import CLI, cli_env, run_cli

NAME = "drex-improve_grip-quick"






def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def get_json(url: str) -> dict:
    return json.loads(get(url)[2])


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Two real trials (baseline + one sampled) in SQLite: (working dir, storage URL)."""
    cwd = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{cwd}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--timesteps", "120000", "--trials", "2", "--storage", url,
                   "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, url


@pytest.fixture
def server(tiny_study):
    """The dashboard on a free loopback port; yields its base URL, stops it afterwards."""
    cwd, url = tiny_study
    port = free_port()
    proc = subprocess.Popen([CLI, "dashboard", "--storage", url, "--port", str(port)], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    end = time.time() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            get(base + "/api/meta")
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.time() < end, "the dashboard never answered"
            time.sleep(0.3)
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_dashboard_shows_the_study_its_notes_and_run_files(tiny_study, server):
    cwd, url = tiny_study
    summaries = get_json(server + "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [NAME]
    study_id = summaries[0]["study_id"]
    detail = get_json(f"{server}/api/studies/{study_id}?after=0")

    study_note = detail["note"]["body"]
    assert "improve_grip" in study_note and "120,000 agent steps per trial" in study_note
    theory = optuna.load_study(study_name=NAME, storage=url).user_attrs["theory"]
    assert theory.strip() in study_note

    assert len(detail["trials"]) == 2
    for trial in detail["trials"]:
        note = trial["note"]["body"]
        run_dir = Path(next(a["value"] for a in trial["user_attrs"] if a["key"] == "run_dir"))
        assert f"## Trial {trial['number']}" in note
        assert f"`{run_dir}`" in note and "### Behaviour" in note and "### Clamp adjustments" in note
        state = trial["state"].lower()
        expected = {"complete": "**Outcome:** complete: grip ", "pruned": "**Outcome:** pruned: ",
                    "fail": "**Outcome:** failed: "}[state]
        assert expected in note, note
        files = {a["filename"]: a for a in trial["artifacts"]}
        assert set(files) == {"summary.json", "train.log"}
        for name, artifact in files.items():
            status, ctype, body = get(f"{server}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}")
            assert status == 200 and body == (run_dir / name).read_bytes()
            assert ctype.startswith({"summary.json": "application/json", "train.log": "text/plain"}[name])
    assert detail["trials"][0]["note"]["body"].startswith("## Trial 0 (baseline)")
    # the run files live next to the database
    assert len(list((cwd / "s-artifacts").iterdir())) == 4


@pytest.mark.parametrize("storage, fragment", [
    ("postgresql://nobody@127.0.0.1:1/none", "cannot open storage"),
    ("sqlite:///{tmp}/missing.db", "no storage at"),
])
def test_dashboard_refuses_an_unreachable_storage(tmp_path, storage, fragment):
    proc = run_cli("dashboard", "--storage", storage.format(tmp=tmp_path), "--port", str(free_port()),
                   cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert fragment in one_line_error(proc)
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "studies").exists()


def test_dashboard_refuses_a_port_in_use(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="x", storage=url)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli("dashboard", "--storage", url, "--port", str(busy.getsockname()[1]), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "cannot listen on 127.0.0.1:" in one_line_error(proc)


@pytest.mark.parametrize("url, folder", [
    ("sqlite:///studies/drex-opt.db", "studies/drex-opt-artifacts"),
    ("sqlite:////srv/opt/a.db", "/srv/opt/a-artifacts"),
    ("journal:runs/j.log", "runs/j.log-artifacts"),
    ("shared/study.jsonl", "shared/study.jsonl-artifacts"),
    ("postgresql+psycopg://u:pw@db:5432/x", "studies/artifacts"),
    ("mysql+pymysql://root@h/test", "studies/artifacts"),
    ("sqlite:///:memory:", "studies/artifacts"),
])
def test_artifact_folder_sits_next_to_the_storage(url, folder):
    assert dashboard.artifact_dir(url) == Path(folder)


def test_record_trial_never_raises_and_needs_a_running_trial(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=url, directions=["maximize"] * 3)
    plan = SimpleNamespace(storage_url=url, study_name=study.study_name, objectives=OBJECTIVES)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"status": "completed"}')
    (run_dir / "train.log").write_text("{}\n")
    summary = {"status": "completed", "grip_success": 0.5, "delivery_success": 0.25, "end_to_end_success": 0.125,
               "behavioral_analysis": {"severity": "ok", "next_focus": "improve_carrying", "insights": ["carries"]}}

    running = study.ask()
    dashboard.record_trial(running, plan, summary, run_dir, "complete: grip 50.0%, delivery 25.0%, e2e 12.5%")
    frozen = study.trials[0]
    assert sorted(json.loads(v)["filename"] for k, v in frozen.system_attrs.items()
                  if k.startswith("artifacts:")) == ["summary.json", "train.log"]
    from optuna_dashboard import get_note

    note = get_note(running)
    assert "complete: grip 50.0%" in note and "improve_carrying" in note and "- carries" in note

    # A finished trial cannot take artifacts: logged as a warning, never raised into the study.
    study.tell(running, [0.5, 0.25, 0.125])
    with caplog.at_level(logging.WARNING, logger="drex_opt.search.dashboard"):
        dashboard.record_trial(running, plan, summary, run_dir, "complete")
        dashboard.record_trial(running, SimpleNamespace(storage_url=None), None, run_dir, "complete")
    assert "run files not attached" in caplog.text
