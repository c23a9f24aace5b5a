"""What a user sees outside the repository: an installed package, file modes, storages.

Each test pins one promise: the shipped search spaces and baselines work from a regular
(non-editable) install, files are written with the user's umask, reading commands never
create a storage, logs of a study tell every trial, and the budget of ``continue`` is its own.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drex_opt.jsonio import write_atomic, write_json_atomic
from drex_opt.search import planning, spaces

from cli_helpers import ROOT, cli_env, one_line_error, run_cli


# ---------------------------------------------------------------- a regular install
@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """drex-opt installed (not editable) into a scratch folder, dependencies from this venv."""
    target = tmp_path_factory.mktemp("site")
    # Build from a copy so the build leaves nothing (build/, *.egg-info) in the repository.
    source = tmp_path_factory.mktemp("src")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            (source / rel).write_bytes((ROOT / rel).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(PYTHONPATH=str(site))
    code = "import sys; from drex_opt.cli import app; sys.argv = ['drex-opt', *sys.argv[1:]]; app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


@pytest.mark.slow
def test_a_regular_install_finds_its_spaces_and_baselines_from_anywhere(installed, tmp_path):
    where = subprocess.run([sys.executable, "-c", "import drex_opt; print(drex_opt.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=cli_env(PYTHONPATH=str(installed)))
    assert Path(where.stdout.strip()).is_relative_to(installed), "the installed copy is the one tested"
    proc = run_installed(installed, tmp_path, "spaces", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {item["focus"] for item in json.loads(proc.stdout)}
    assert listed == {p.stem for p in (ROOT / "search_spaces").glob("*.toml")}
    proposal = tmp_path / "next_config.json"
    proposal.write_text('{"train": {"gamma": 0.98}}')
    for baseline in ("quick", "full"):
        proc = run_installed(installed, tmp_path, "validate", str(proposal), "--baseline", baseline, "--json")
        assert proc.returncode == 0, proc.stderr
        shipped = json.loads((ROOT / "autopilot" / "configs" / f"baseline_{baseline}.json").read_text())
        sizes = json.loads(proc.stdout)["overrides"]["train"]["batch_size"]
        t, e, v = shipped["train"], shipped["env"], shipped["vec"]
        assert sizes == e["num_envs"] * e["num_drones"] * v["num_envs"] * t["bptt_horizon"]


def test_requires_python_admits_only_versions_with_tomllib():
    # tomllib (search spaces) is in the standard library from Python 3.11 on.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].replace(" ", "") == ">=3.11"


# ---------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        json_file = write_json_atomic(tmp_path / "summary.json", {"a": 1})
        text_file = write_atomic(tmp_path / "report.md", "# report\n")
        via_function = write_atomic(tmp_path / "model.pt", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(previous)
    for path in (json_file, text_file, via_function):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "report.md", "summary.json"]


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = write_json_atomic(tmp_path / "next_config.json", {"train": {"gamma": 0.9}})

    def crash(tmp):
        Path(tmp).write_text("{ half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(path, crash)
    assert json.loads(path.read_text()) == {"train": {"gamma": 0.9}}
    assert [p.name for p in tmp_path.iterdir()] == ["next_config.json"], "no temporary file is left"


# ---------------------------------------------------------------- reading commands create nothing
@pytest.mark.parametrize("command", [["export"], ["report"], ["export", "--dry-run"]])
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_reading_commands_refuse_a_missing_storage_and_create_nothing(tmp_path, command, kind):
    missing = tmp_path / "typo" / ("studies.db" if kind == "sqlite" else "studies.log")
    url = f"sqlite:///{missing}" if kind == "sqlite" else f"journal:{missing}"
    one_line_error(run_cli(*command, "--storage", url, cwd=tmp_path, timeout=120), "no storage at", str(missing))
    assert not missing.exists() and not missing.parent.exists()


# ---------------------------------------------------------------- continue's own budget
def test_continue_uses_its_own_budget(tmp_path):
    own = spaces.load("continue").budget
    plan = planning.plan(planning.StudySettings(focus="continue", storage=f"sqlite:///{tmp_path}/s.db"))
    assert plan.space_focus != "continue", "continue searches another focus's parameters"
    assert (plan.trials, plan.timesteps, plan.repeats) == (own.trials, own.quick_timesteps, own.repeats)
    full = planning.plan(planning.StudySettings(focus="continue", baseline="full", storage=f"sqlite:///{tmp_path}/s.db"))
    assert full.timesteps == own.full_timesteps


# ---------------------------------------------------------------- logs tell every trial
@pytest.mark.slow
def test_a_study_written_to_a_file_logs_one_line_per_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    log = tmp_path / "study.log"
    with open(log, "w") as out:
        proc = subprocess.run([str(Path(sys.executable).parent / "drex-opt"), "study", "--focus", "improve_grip",
                               "--storage", url, "--trials", "3", "--timesteps", "100000", "--no-early-stopping"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=cli_env(), timeout=900)
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("trial ")]
    assert [line.split(":")[0] for line in lines] == ["trial 0", "trial 1", "trial 2"], text
    assert all(("complete grip" in line) or ("(" in line) for line in lines), lines
    assert "\x1b[" not in text, "no terminal control sequences in a log file"


# ---------------------------------------------------------------- the README's first command
def test_the_first_command_studies_the_focus_the_run_names():
    """Not a hard-coded focus: the main job trains, diagnoses, then studies what it diagnosed."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    first = [line for line in block.splitlines() if line.strip()][0]
    command = first.split("#", 1)[0].split("&&")[-1].split()
    assert command[:2] == [".venv/bin/drex-opt", "autopilot"] and "--optimize" in command
    assert "--focus" not in command


def test_the_console_command_leaves_without_a_final_collection(monkeypatch):
    """``drex-opt`` is ``cli.main``: once the command is done it freezes the heap, so the
    interpreter's exit does not walk every imported module's objects (over a second after a
    study on a slow core); the exit code is the command's."""
    import gc

    from drex_opt import cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["drex-opt"] == "drex_opt.cli:main"
    try:
        for argv, code in ((["drex-opt", "--help"], 0), (["drex-opt", "study", "--focus", "nope"], 2)):
            gc.unfreeze()
            monkeypatch.setattr(sys, "argv", argv)
            with pytest.raises(SystemExit) as exc:
                cli.main()
            assert exc.value.code == code
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
