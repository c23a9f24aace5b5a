"""Run configuration: baselines, merging, derived batch sizes, resolve."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def raw(name: str) -> dict:
    return json.loads((REPO / config.BASELINES[name]).read_text())


def product(cfg: dict) -> int:
    return cfg["env"]["num_envs"] * cfg["env"]["num_drones"] * cfg["vec"]["num_envs"] * cfg["train"]["bptt_horizon"]


# ---------------------------------------------------------------- baselines
@pytest.mark.parametrize("name", ["quick", "full"])
def test_both_baselines_are_complete_and_valid(name):
    data = raw(name)
    assert safety.validate(data, complete=True) == []
    assert {f"{s}.{k}" for s, values in data.items() for k in values} == safety.ALLOWED_KEYS
    assert data["train"]["batch_size"] == product(data)
    assert data["vec"]["num_envs"] % data["vec"]["num_workers"] == 0
    assert config.load_baseline(name) == data


def test_full_baseline_runs_long_on_a_larger_topology():
    full, quick = raw("full"), raw("quick")
    assert 10_000_000 <= full["train"]["total_timesteps"] <= 20_000_000
    assert 1_000_000 <= quick["train"]["total_timesteps"] <= 2_000_000
    assert full["train"]["device"] == quick["train"]["device"] == "cpu"
    assert product(full) > product(quick)


def test_load_baseline_by_path_and_fills_missing_sizes(tmp_path):
    data = raw("quick")
    for name in safety.DERIVED:
        del data["train"][name]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    loaded = config.load_baseline(path)
    assert loaded["train"]["batch_size"] == loaded["train"]["max_minibatch_size"] == product(data)
    assert config.load_baseline(str(path)) == loaded


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["train"].__setitem__("batch_size", 3), "train.batch_size: 3 must equal"),
        (lambda c: c["train"].pop("seed"), "train.seed: missing"),
        (lambda c: c.__setitem__("policy", {}), "policy: unknown section"),
        (lambda c: c["vec"].update(num_envs=4, num_workers=3), "vec.num_envs: 4 is not a multiple of vec.num_workers"),
    ],
)
def test_load_baseline_names_the_problem(tmp_path, mutate, message):
    data = raw("quick")
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as info:
        config.load_baseline(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_baseline_file_errors(tmp_path):
    with pytest.raises(UserError, match="config not found"):
        config.load_baseline(tmp_path / "none.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(UserError, match="JSON object"):
        config.load_baseline(tmp_path / "list.json")


def test_named_baselines_prefer_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.baseline_path("quick") == REPO / config.BASELINES["quick"]
    local = tmp_path / config.BASELINES["quick"]
    local.parent.mkdir(parents=True)
    data = raw("quick")
    data["train"]["seed"] = 4242
    local.write_text(json.dumps(data))
    assert config.baseline_path("quick") == tmp_path / config.BASELINES["quick"]
    assert config.load_baseline("quick")["train"]["seed"] == 4242
    assert config.baseline_path("other.json") == Path("other.json")


# ---------------------------------------------------------------- merge and derive
def test_merge_is_deep_and_pure():
    base = {"train": {"a": 1, "b": 2}, "env": {"n": 1}}
    overrides = {"train": {"b": 3, "c": 4}, "vec": {"w": 2}}
    snapshot = copy.deepcopy((base, overrides))
    merged = safety.merge(base, overrides)
    assert merged == {"train": {"a": 1, "b": 3, "c": 4}, "env": {"n": 1}, "vec": {"w": 2}}
    assert (base, overrides) == snapshot
    merged["train"]["a"] = 99
    merged["vec"]["w"] = 99
    assert base["train"]["a"] == 1 and overrides["vec"]["w"] == 2


def test_merge_replaces_non_object_sections():
    assert safety.merge({"train": {"a": 1}}, {"train": 5}) == {"train": 5}
    assert safety.merge({"train": 5}, {"train": {"a": 1}}) == {"train": {"a": 1}}


def test_derive_batch_sizes():
    cfg = {"env": {"num_envs": 4, "num_drones": 8}, "vec": {"num_envs": 56}, "train": {"bptt_horizon": 16}}
    assert safety.derive_batch_sizes(cfg) == {name: 28672 for name in safety.DERIVED}


@pytest.mark.parametrize("bad", [None, 0, -2, 2.0, True, "4"])
def test_derive_batch_sizes_needs_positive_integer_factors(bad):
    cfg = {"env": {"num_envs": 4, "num_drones": bad}, "vec": {"num_envs": 56}, "train": {"bptt_horizon": 16}}
    assert safety.derive_batch_sizes(cfg) == {}
    assert safety.derive_batch_sizes({"env": 3}) == {}


# ---------------------------------------------------------------- resolve
def test_resolve_without_overrides_is_the_baseline():
    assert config.resolve("quick") == config.load_baseline("quick")
    assert config.resolve(REPO / config.BASELINES["full"]) == config.load_baseline("full")


def test_resolve_derives_sizes_after_a_topology_change():
    base = config.load_baseline("quick")
    cfg = config.resolve("quick", {"env": {"num_drones": 2}, "train": {"bptt_horizon": 8}})
    assert cfg["env"]["num_drones"] == 2
    expected = base["env"]["num_envs"] * 2 * base["vec"]["num_envs"] * 8
    assert {cfg["train"][name] for name in safety.DERIVED} == {expected}
    assert cfg["train"]["learning_rate"] == base["train"]["learning_rate"]


def test_resolve_override_file_then_extra(tmp_path):
    path = tmp_path / "next_config.json"
    path.write_text(json.dumps({"train": {"seed": 5, "learning_rate": 0.001}}))
    cfg = config.resolve("full", path, {"train": {"total_timesteps": 5000, "seed": 9}})
    assert cfg["train"]["seed"] == 9
    assert cfg["train"]["total_timesteps"] == 5000
    assert cfg["train"]["learning_rate"] == 0.001
    assert json.loads(path.read_text()) == {"train": {"seed": 5, "learning_rate": 0.001}}


def test_resolve_reports_every_problem_on_one_line():
    with pytest.raises(UserError) as info:
        config.resolve("quick", {"train": {"learning_rate": 2.0, "gamma": True}, "policy": {}})
    message = str(info.value)
    assert "\n" not in message
    assert message.split("; ") == [
        "train.learning_rate: 2.0 is above the maximum 1.0",
        "train.gamma: true is not a number",
        "policy: unknown section",
    ]


def test_resolve_checks_given_batch_sizes():
    base = config.load_baseline("quick")
    expected = product(safety.merge(base, {"train": {"bptt_horizon": 64}}))
    with pytest.raises(UserError, match=f"train.batch_size: 1 must equal .* = {expected}"):
        config.resolve("quick", {"train": {"bptt_horizon": 64, "batch_size": 1}})


def test_resolve_validates_extra():
    with pytest.raises(UserError, match="train.total_timesteps: 10 is below the minimum 1000"):
        config.resolve("quick", None, {"train": {"total_timesteps": 10}})


def test_resolve_checks_the_override_before_merging_extra():
    with pytest.raises(UserError, match="train: must be an object"):
        config.resolve("quick", {"train": 3}, {"train": {"seed": 1}})


def test_resolve_override_file_errors(tmp_path):
    path = tmp_path / "o.json"
    path.write_text('["not", "an object"]')
    with pytest.raises(UserError, match="override file must hold a JSON object"):
        config.resolve("quick", path)
    with pytest.raises(UserError, match="override file not found"):
        config.resolve("quick", tmp_path / "missing.json")
