"""``drex-opt validate`` and ``drex-opt spaces`` through the typer app and the real binary."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.search import spaces
from drex_opt.cli import app

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / ".venv" / "bin" / "drex-opt"
QUICK = config.load_baseline("quick")
runner = CliRunner()


def proposal(tmp_path: Path, content, name: str = "next_config.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- validate
def test_valid_proposal_prints_overrides_with_derived_sizes(tmp_path):
    result = run("validate", proposal(tmp_path, {"train": {"gamma": 0.98}}))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    expected = QUICK["env"]["num_envs"] * QUICK["env"]["num_drones"] * QUICK["vec"]["num_envs"] * QUICK["train"]["bptt_horizon"]
    assert printed == {"train": {"gamma": 0.98, **{name: expected for name in safety.DERIVED}}}
    assert "valid against the quick baseline" in result.stderr


def test_a_topology_change_must_carry_its_batch_sizes(tmp_path):
    """The brief: "Derive batch sizes from your proposal" — leaving them out is refused."""
    expected = QUICK["env"]["num_envs"] * 2 * QUICK["vec"]["num_envs"] * QUICK["train"]["bptt_horizon"]
    path = proposal(tmp_path, {"env": {"num_drones": 2}})
    result = run("validate", path)
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("train.batch_size, train.minibatch_size, train.max_minibatch_size: missing")
    assert "env.num_drones" in line and line.endswith(f"= {expected} (validate --clamp adds them)")

    # with the sizes the same proposal is valid
    sizes = {name: expected for name in safety.DERIVED}
    assert run("validate", proposal(tmp_path, {"env": {"num_drones": 2}, "train": sizes}, "sized.json")).exit_code == 0
    # a change that keeps the product (twice the arenas, half the drones) needs none
    same = {"env": {"num_drones": QUICK["env"]["num_drones"] // 2, "num_envs": QUICK["env"]["num_envs"] * 2}}
    assert run("validate", proposal(tmp_path, same, "same.json")).exit_code == 0

    # --clamp adds them (the problem it repaired is listed)
    result = run("validate", path, "--clamp", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["overrides"]["train"] == sizes
    assert [p.split(":")[0] for p in data["problems"]] == [", ".join(f"train.{n}" for n in safety.DERIVED)]


def test_empty_proposal_is_valid(tmp_path):
    result = run("validate", proposal(tmp_path, "{}"))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"train": {name: QUICK["train"]["batch_size"] for name in safety.DERIVED}}


def test_invalid_proposal_one_line_per_problem(tmp_path):
    path = proposal(tmp_path, {"train": {"learning_rate": 2.0, "bptt_horizon": 16.5}, "policy": {}})
    result = run("validate", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "train.learning_rate: 2.0 is above the maximum 1.0",
        "train.bptt_horizon: 16.5 is not an integer",
        "policy: unknown section",
    ]


def test_json_output_valid_and_invalid(tmp_path):
    result = run("validate", proposal(tmp_path, {"train": {"gamma": 0.98}}), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["problems"] == [] and data["adjustments"] == []
    assert data["overrides"]["train"]["gamma"] == 0.98 and "batch_size" in data["overrides"]["train"]

    result = run("validate", proposal(tmp_path, {"env": {"reward_grip": 1}}), "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data == {"valid": False, "problems": ["env.reward_grip: unknown key"], "overrides": {"env": {"reward_grip": 1}}, "adjustments": [], "warnings": []}


def test_clamp_prints_the_repaired_proposal(tmp_path):
    path = proposal(tmp_path, {"train": {"learning_rate": 2.0, "anneal_lr": "yes"}, "sweep": {}})
    result = run("validate", path, "--clamp")
    assert result.exit_code == 0, result.output
    repaired = json.loads(result.stdout)
    assert repaired["train"]["learning_rate"] == 1.0
    assert repaired["train"]["anneal_lr"] == QUICK["train"]["anneal_lr"]
    assert safety.validate(repaired, QUICK) == []
    assert "3 adjustment(s)" in result.stderr and "sweep: unknown section; dropped" in result.stderr


def test_clamp_json(tmp_path):
    result = run("validate", proposal(tmp_path, {"train": {"seed": -5}}), "--clamp", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["problems"] == ["train.seed: -5 is below the minimum 0"]
    assert data["overrides"]["train"]["seed"] == 0
    assert data["adjustments"] == ["train.seed: -5 is below the minimum 0; set to 0"]


def test_clamp_of_a_valid_proposal_adjusts_nothing(tmp_path):
    result = run("validate", proposal(tmp_path, {"train": {"seed": 5}}), "--clamp")
    assert result.exit_code == 0
    assert "nothing to adjust" in result.stderr


def test_full_and_path_baselines(tmp_path):
    full = config.load_baseline("full")
    result = run("validate", proposal(tmp_path, {}), "--baseline", "full")
    assert json.loads(result.stdout)["train"]["batch_size"] == full["train"]["batch_size"]
    result = run("validate", proposal(tmp_path, {}), "-b", REPO / config.BASELINES["full"])
    assert result.exit_code == 0 and json.loads(result.stdout)["train"]["batch_size"] == full["train"]["batch_size"]


def test_batch_size_and_divisibility_errors(tmp_path):
    result = run("validate", proposal(tmp_path, {"train": {"batch_size": 12}, "vec": {"num_envs": 7, "num_workers": 2}}))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert "vec.num_envs: 7 is not a multiple of vec.num_workers (2)" in lines
    expected = QUICK["env"]["num_envs"] * QUICK["env"]["num_drones"] * 7 * QUICK["train"]["bptt_horizon"]
    assert any(line.startswith("train.batch_size: 12 must equal") and line.endswith(f"= {expected}") for line in lines)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"train": {', "proposal is not valid JSON"),
        ("[1, 2]", "proposal must hold a JSON object at the top level"),
        ('{"train": {"ent_coef": NaN}}', "NaN is not valid JSON"),
        ("", "proposal is empty"),
    ],
)
def test_malformed_proposals(tmp_path, content, message):
    result = run("validate", proposal(tmp_path, content))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line


def test_missing_proposal_and_bad_baseline(tmp_path):
    result = run("validate", tmp_path / "none.json")
    assert result.exit_code == 2 and "proposal not found" in result.stderr
    result = run("validate", proposal(tmp_path, {}), "--baseline", tmp_path / "nope.json")
    assert result.exit_code == 2 and "config not found" in result.stderr


def test_validate_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = proposal(tmp_path, {"train": {"learning_rate": 9}})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*")}
    baseline_before = (REPO / config.BASELINES["quick"]).read_bytes()
    for args in ([], ["--clamp"], ["--json"]):
        run("validate", path, "-b", REPO / config.BASELINES["quick"], *args)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*")} == before
    assert (REPO / config.BASELINES["quick"]).read_bytes() == baseline_before


def test_real_binary_exits_2_with_one_line(tmp_path):
    path = proposal(tmp_path, {"train": {"learning_rate": 2.0}})
    done = subprocess.run([str(BINARY), "validate", str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "train.learning_rate: 2.0 is above the maximum 1.0\n"
    assert "Traceback" not in done.stderr + done.stdout

    bad = proposal(tmp_path, "{not json", "bad.json")
    done = subprocess.run([str(BINARY), "validate", str(bad)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- spaces
def test_spaces_lists_every_focus():
    result = run("spaces")
    assert result.exit_code == 0
    for focus in spaces.FOCI:
        assert focus in result.stdout
    assert "15M" in result.stdout and "inherit" in result.stdout


def test_spaces_json_list():
    result = run("spaces", "--json")
    data = json.loads(result.stdout)
    assert [item["focus"] for item in data] == list(spaces.FOCI)
    by_focus = {item["focus"]: item for item in data}
    assert by_focus["diagnostic_grip"]["budget"]["full_timesteps"] == spaces.load("diagnostic_grip").budget.full_timesteps


def test_spaces_one_focus():
    result = run("spaces", "fix_stability")
    assert result.exit_code == 0
    space = spaces.load("fix_stability")
    assert space.description.split()[0] in result.stdout
    for name in space.params:
        assert name in result.stdout
    data = json.loads(run("spaces", "fix_stability", "--json").stdout)
    assert set(data["params"]) == set(space.params) and data["params"]["train.adam_eps"]["log"] is True


def test_spaces_continue_explains_inheritance():
    result = run("spaces", "continue")
    assert result.exit_code == 0 and "previous focus" in result.stdout


def test_spaces_unknown_focus():
    result = run("spaces", "grip")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: unknown focus 'grip'") and "optimize_performance" in line


def test_spaces_malformed_file_through_the_binary(tmp_path):
    (tmp_path / "tune_grip.toml").write_text("description = [")
    env = {**os.environ, "DREX_SEARCH_SPACES": str(tmp_path)}
    done = subprocess.run([str(BINARY), "spaces", "tune_grip"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "tune_grip.toml" in done.stderr and len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr
