"""The owner's brief (autopilot-brief.txt) as a contract: every key, range, type and choice.

The table below is copied by hand from the brief's list of keys, not from
``drex_opt.rules.safety``, so that any drift of the code from the brief turns a test red.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from drex_opt.rules import config
from drex_opt.rules import safety
from cli_helpers import run_cli


@dataclass(frozen=True)
class BriefKey:
    key: str
    kind: str  # float | int | bool | choice | checkpoint
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def number(key: str, kind: str, low, high) -> BriefKey:
    return BriefKey(key, kind, low, high)


# The brief, "Touch only these keys and respect the safety ranges", in its order.
BRIEF = (
    # Core PPO scalars
    number("train.learning_rate", "float", 1e-6, 1.0),
    number("train.ent_coef", "float", 0, 1),
    number("train.bptt_horizon", "int", 1, 512),
    number("train.total_timesteps", "int", 1_000, 1_000_000_000),
    number("train.seed", "int", 0, 2_147_483_647),
    number("train.update_epochs", "int", 1, 32),
    number("train.gae_lambda", "float", 0, 1),
    number("train.gamma", "float", 0, 0.999999),
    number("train.clip_coef", "float", 0, 1),
    number("train.vf_clip_coef", "float", 0, 10),
    # Optimiser & stability knobs
    BriefKey("train.optimizer", "choice", choices=("muon", "adam", "adamw")),
    number("train.vf_coef", "float", 0, 10),
    number("train.max_grad_norm", "float", 0, 100),
    number("train.checkpoint_interval", "int", 1, 1_000_000),
    number("train.adam_beta1", "float", 0, 0.999999),
    number("train.adam_beta2", "float", 0, 0.9999999),
    number("train.adam_eps", "float", 1e-14, 1e-2),
    # Schedule & determinism toggles ("Booleans; stick with JSON true/false")
    BriefKey("train.anneal_lr", "bool"),
    BriefKey("train.torch_deterministic", "bool"),
    BriefKey("train.cpu_offload", "bool"),
    BriefKey("train.compile", "bool"),
    BriefKey("train.compile_fullgraph", "bool"),
    BriefKey("train.precision", "choice", choices=("float32", "bfloat16")),
    # The brief: "documented choices in PufferLib, default max-autotune-no-cudagraphs".
    # PufferLib passes the value to torch.compile(mode=...), whose documentation reads:
    # 'mode (str): Can be either "default", "reduce-overhead", "max-autotune" or
    # "max-autotune-no-cudagraphs"'.
    BriefKey("train.compile_mode", "choice",
             choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")),
    # Device & topology. The sentence reads "`env.num_envs`, `env.num_drones` (1–256),
    # `vec.num_envs`, `vec.num_workers` (1–256)": each "(1–256)" closes a group of counts
    # listed with it, so it covers all four counts.
    BriefKey("train.device", "choice", choices=("mps", "cpu", "cuda")),
    number("env.num_envs", "int", 1, 256),
    number("env.num_drones", "int", 1, 256),
    number("vec.num_envs", "int", 1, 256),
    number("vec.num_workers", "int", 1, 256),
    # Autopilot run policy
    BriefKey("autopilot.resume_mode", "choice", choices=("fresh", "continue")),
    BriefKey("autopilot.resume_from", "checkpoint", choices=("latest", "best")),
    BriefKey("autopilot.save_strategy", "choice", choices=("best", "latest", "all")),
)
# "Derive batch sizes from your proposal": all three equal the product of the topology.
DERIVED_KEYS = ("train.batch_size", "train.minibatch_size", "train.max_minibatch_size")
TOPOLOGY_KEYS = ("env.num_envs", "env.num_drones", "vec.num_envs", "train.bptt_horizon")

BY_KEY = {entry.key: entry for entry in BRIEF}
RANGED = [entry for entry in BRIEF if entry.kind in ("float", "int")]
FLOATS = [entry for entry in BRIEF if entry.kind == "float"]
INTS = [entry for entry in BRIEF if entry.kind == "int"]
BOOLS = [entry for entry in BRIEF if entry.kind == "bool"]
CHOICES = [entry for entry in BRIEF if entry.kind == "choice"]
ZERO_LOW = [entry for entry in RANGED if entry.low == 0]

QUICK = config.load_baseline("quick")
# More than any count the brief allows, so clamp never caps workers at this machine's cores.
CORES = 256


def keys(entries) -> list[str]:
    return [entry.key for entry in entries]


def proposal(key: str, value) -> dict:
    """``{section: {name: value}}``, keeping the topology rule satisfiable.

    A worker count only validates when ``vec.num_envs`` is a multiple of it, so an
    in-range worker count comes with as many vec envs (also within the brief's range).
    """
    section, name = key.split(".")
    overrides = {section: {name: value}}
    envs = BY_KEY["vec.num_envs"]
    if key == "vec.num_workers" and is_int(value) and envs.low <= value <= envs.high:
        overrides["vec"]["num_envs"] = value
    return overrides


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def problems(key: str, value) -> list[safety.Problem]:
    return safety.validate(proposal(key, value), QUICK)


def accepted(key: str, value) -> bool:
    return problems(key, value) == []


def refused_naming(key: str, value) -> bool:
    return any(problem.key == key for problem in problems(key, value))


def just_below(entry: BriefKey):
    return math.nextafter(float(entry.low), -math.inf) if entry.kind == "float" else entry.low - 1


def just_above(entry: BriefKey):
    return math.nextafter(float(entry.high), math.inf) if entry.kind == "float" else entry.high + 1


def far_below(entry: BriefKey):
    return entry.low - max(1, abs(entry.low))


def far_above(entry: BriefKey):
    return entry.high + max(1, abs(entry.high))


def clamped_value(key: str, value):
    repaired, _ = safety.clamp(proposal(key, value), QUICK, cores=CORES)
    section, name = key.split(".")
    return repaired[section][name]


# ---------------------------------------------------------------- the key set
def test_allowed_keys_are_exactly_the_brief_keys_plus_the_derived_sizes():
    assert len(BY_KEY) == len(BRIEF)
    expected = set(BY_KEY) | set(DERIVED_KEYS)
    assert set(safety.ALLOWED_KEYS) - expected == set(), "keys the brief does not list"
    assert expected - set(safety.ALLOWED_KEYS) == set(), "brief keys the code does not allow"


def test_a_key_outside_the_brief_is_refused():
    assert any(problem.key == "train.reward_grip" for problem in safety.validate({"train": {"reward_grip": 1}}, QUICK))


# ---------------------------------------------------------------- ranges
@pytest.mark.parametrize("entry", RANGED, ids=keys(RANGED))
def test_both_ends_are_accepted(entry):
    assert accepted(entry.key, entry.low), problems(entry.key, entry.low)
    assert accepted(entry.key, entry.high), problems(entry.key, entry.high)


@pytest.mark.parametrize("entry", RANGED, ids=keys(RANGED))
def test_just_outside_either_end_is_refused_naming_the_key(entry):
    for value in (just_below(entry), just_above(entry), far_below(entry), far_above(entry)):
        assert refused_naming(entry.key, value), (value, problems(entry.key, value))


@pytest.mark.parametrize("entry", ZERO_LOW, ids=keys(ZERO_LOW))
def test_negative_values_are_refused_where_the_brief_starts_at_zero(entry):
    for value in (-1, -0.5, -1e-300):
        if entry.kind == "int" and not is_int(value):
            continue
        assert refused_naming(entry.key, value), value


@pytest.mark.parametrize("entry", RANGED, ids=keys(RANGED))
def test_clamp_moves_out_of_range_numbers_to_the_brief_end(entry):
    assert clamped_value(entry.key, just_below(entry)) == entry.low
    assert clamped_value(entry.key, far_below(entry)) == entry.low
    assert clamped_value(entry.key, just_above(entry)) == entry.high
    assert clamped_value(entry.key, far_above(entry)) == entry.high


@pytest.mark.parametrize("entry", RANGED, ids=keys(RANGED))
def test_clamp_keeps_the_ends(entry):
    assert clamped_value(entry.key, entry.low) == entry.low
    assert clamped_value(entry.key, entry.high) == entry.high


# ---------------------------------------------------------------- types
@pytest.mark.parametrize("entry", INTS, ids=keys(INTS))
def test_int_keys_refuse_fractions_and_booleans(entry):
    for value in (1.5, entry.low + 0.5, True, False, str(entry.low)):
        assert refused_naming(entry.key, value), value


@pytest.mark.parametrize("entry", FLOATS, ids=keys(FLOATS))
def test_float_keys_refuse_strings_and_booleans(entry):
    for value in ("0.5", str(entry.high), True, False, None):
        assert refused_naming(entry.key, value), value


# JSON has one number type: an integer such as 0 or 1 is a valid float where in range.
INTEGER_FLOATS = [(entry, n) for entry in FLOATS for n in (0, 1, 10) if entry.low <= n <= entry.high]


@pytest.mark.parametrize("entry, value", INTEGER_FLOATS, ids=[f"{e.key}={n}" for e, n in INTEGER_FLOATS])
def test_float_keys_accept_integers_in_range(entry, value):
    assert accepted(entry.key, value)


@pytest.mark.parametrize("entry", BOOLS, ids=keys(BOOLS))
def test_bool_keys_take_json_true_and_false_only(entry):
    assert accepted(entry.key, True) and accepted(entry.key, False)
    for value in ("true", "false", 0, 1, 0.0, None):
        assert refused_naming(entry.key, value), value


@pytest.mark.parametrize("entry", CHOICES, ids=keys(CHOICES))
def test_choice_keys_accept_each_choice(entry):
    for choice in entry.choices:
        assert accepted(entry.key, choice), choice


# Plausible near-misses a proposal could carry; none is in the brief.
NEAR_MISSES = {
    "train.optimizer": ("Adam", "ADAMW", "sgd", "adam "),
    "train.precision": ("fp16", "float16", "bf16", "Float32"),
    "train.compile_mode": ("max_autotune", "Default", "max-autotune-no-cudagraph", ""),
    "train.device": ("gpu", "CUDA", "cuda:0", "metal"),
    "autopilot.resume_mode": ("resume", "Fresh", "continued"),
    "autopilot.save_strategy": ("last", "Best", "every"),
}


@pytest.mark.parametrize("entry", CHOICES, ids=keys(CHOICES))
def test_choice_keys_refuse_near_misses_and_non_strings(entry):
    for value in (*NEAR_MISSES[entry.key], *(choice.upper() for choice in entry.choices), 1, True, None):
        assert refused_naming(entry.key, value), value


# Behaviour cannot show that no extra string is accepted, so the code's choice lists are
# compared with the brief's.
@pytest.mark.parametrize("entry", [*CHOICES, BY_KEY["autopilot.resume_from"]],
                         ids=[*keys(CHOICES), "autopilot.resume_from"])
def test_the_code_offers_exactly_the_brief_choices(entry):
    assert set(safety.SPEC_BY_KEY[entry.key].choices) == set(entry.choices)


def test_every_choice_key_has_near_misses():
    assert set(NEAR_MISSES) == set(keys(CHOICES))


def test_compile_mode_default_is_accepted_and_is_pufferlib_default():
    assert accepted("train.compile_mode", "max-autotune-no-cudagraphs")
    import pufferlib

    # PufferLib's own default config is the brief's "default max-autotune-no-cudagraphs".
    default_ini = Path(pufferlib.__file__).parent / "config" / "default.ini"
    found = re.findall(r"^compile_mode\s*=\s*(\S+)", default_ini.read_text(), re.MULTILINE)
    assert found == ["max-autotune-no-cudagraphs"]


def test_every_compile_mode_used_by_pufferlib_configs_is_accepted():
    import pufferlib

    used = set()
    for ini in (Path(pufferlib.__file__).parent / "config").rglob("*.ini"):
        used |= set(re.findall(r"^compile_mode\s*=\s*(\S+)", ini.read_text(errors="replace"), re.MULTILINE))
    assert used, "PufferLib's configs name no compile_mode"
    assert used <= set(BY_KEY["train.compile_mode"].choices)
    for mode in used:
        assert accepted("train.compile_mode", mode), mode


@pytest.mark.parametrize("value", ["latest", "best", "autopilot/models/run_7/model_000400.pt", "/abs/model.pt"])
def test_resume_from_takes_latest_best_or_a_checkpoint_path(value):
    assert accepted("autopilot.resume_from", value)


@pytest.mark.parametrize("value", ["Latest", "newest", "model.pth", "model.pt.bak", 3, True, None])
def test_resume_from_refuses_anything_else(value):
    assert refused_naming("autopilot.resume_from", value)


def test_clamp_replaces_wrong_types_with_the_baseline_value():
    for entry in (*BOOLS, *CHOICES):
        section, name = entry.key.split(".")
        assert clamped_value(entry.key, "not-a-choice" if entry.kind == "bool" else 7) == QUICK[section][name]


# ---------------------------------------------------------------- derived sizes and topology
def topology(envs: int, drones: int, vec_envs: int, workers: int, horizon: int) -> dict:
    return {
        "env": {"num_envs": envs, "num_drones": drones},
        "vec": {"num_envs": vec_envs, "num_workers": workers},
        "train": {"bptt_horizon": horizon},
    }


def with_sizes(overrides: dict, size: int) -> dict:
    out = json.loads(json.dumps(overrides))
    out["train"].update({key.split(".")[1]: size for key in DERIVED_KEYS})
    return out


@pytest.mark.parametrize("key", DERIVED_KEYS)
def test_each_derived_size_must_equal_the_product(key):
    base = topology(4, 8, 56, 28, 16)
    size = 4 * 8 * 56 * 16
    assert safety.validate(with_sizes(base, size), QUICK) == []
    wrong = with_sizes(base, size)
    wrong["train"][key.split(".")[1]] = size + 1
    assert [problem.key for problem in safety.validate(wrong, QUICK)] == [key]


def test_the_largest_topology_the_brief_allows_is_valid_with_its_sizes():
    highs = {key: BY_KEY[key].high for key in (*TOPOLOGY_KEYS, "vec.num_workers")}
    overrides = topology(highs["env.num_envs"], highs["env.num_drones"], highs["vec.num_envs"],
                         highs["vec.num_workers"], highs["train.bptt_horizon"])
    size = math.prod(highs[key] for key in TOPOLOGY_KEYS)
    assert safety.validate(with_sizes(overrides, size), QUICK) == []
    repaired, _ = safety.clamp(overrides, QUICK, cores=CORES)
    assert {key: repaired["train"][key.split(".")[1]] for key in DERIVED_KEYS} == dict.fromkeys(DERIVED_KEYS, size)


def test_clamp_derives_the_sizes_from_the_brief_formula():
    overrides = topology(3, 5, 6, 2, 7)
    repaired, _ = safety.clamp(with_sizes(overrides, 1), QUICK, cores=CORES)
    assert all(repaired["train"][key.split(".")[1]] == 3 * 5 * 6 * 7 for key in DERIVED_KEYS)


@pytest.mark.parametrize("vec_envs, workers", [(6, 4), (28, 3), (255, 2), (1, 256)])
def test_vec_envs_not_divisible_by_workers_is_refused(vec_envs, workers):
    found = safety.validate({"vec": {"num_envs": vec_envs, "num_workers": workers}}, QUICK)
    assert {problem.key for problem in found} & {"vec.num_envs", "vec.num_workers"}


@pytest.mark.parametrize("vec_envs, workers", [(28, 28), (56, 28), (84, 28), (256, 128), (7, 1)])
def test_vec_envs_divisible_by_workers_is_accepted(vec_envs, workers):
    assert safety.validate({"vec": {"num_envs": vec_envs, "num_workers": workers}}, QUICK) == []


def test_a_worker_change_alone_is_checked_against_the_baseline_vec_envs():
    base_envs = QUICK["vec"]["num_envs"]
    bad_workers = next(n for n in range(2, 257) if base_envs % n)
    assert safety.validate({"vec": {"num_workers": bad_workers}}, QUICK) != []


# ---------------------------------------------------------------- the console script
def only_problem_line(proc, key: str) -> str:
    """Exit code 2 and one problem line on stderr, naming ``key`` first."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{key}: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("key", ["train.max_grad_norm", "train.clip_coef", "env.num_envs", "train.adam_beta2"])
def test_cli_refuses_a_value_just_above_the_brief_maximum(tmp_path, key):
    path = tmp_path / "next_config.json"
    path.write_text(json.dumps(proposal(key, just_above(BY_KEY[key]))))
    line = only_problem_line(run_cli("validate", str(path), timeout=120), key)
    assert "maximum" in line


def test_cli_accepts_every_brief_maximum_at_once(tmp_path):
    overrides: dict = {}
    for entry in RANGED:
        section, name = entry.key.split(".")
        overrides.setdefault(section, {})[name] = entry.high
    # "Derive batch sizes from your proposal": the proposal carries them.
    size = math.prod(BY_KEY[key].high for key in TOPOLOGY_KEYS)
    path = tmp_path / "next_config.json"
    path.write_text(json.dumps(with_sizes(overrides, size)))
    proc = run_cli("validate", str(path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert all(printed["train"][key.split(".")[1]] == size for key in DERIVED_KEYS)
