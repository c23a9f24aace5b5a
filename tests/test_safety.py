"""Safety rules: every key's type and range, the topology and batch-size rules, clamping."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.errors import UserError
from drex_opt.jsonio import read_json

QUICK = config.load_baseline("quick")
FULL = config.load_baseline("full")
# The quick baseline is tuned over time; rule tests pin its topology to know the numbers.
SIZE = 8 * 16 * 4 * 32
BASE = safety.merge(QUICK, {
    "env": {"num_envs": 8, "num_drones": 16},
    "vec": {"num_envs": 4, "num_workers": 2},
    "train": {"bptt_horizon": 32, **{name: SIZE for name in safety.DERIVED}},
})


def messages(overrides, baseline=BASE) -> list[str]:
    return [str(problem) for problem in safety.validate(overrides, baseline)]


def one(key: str, value) -> dict:
    section, name = key.split(".")
    return {section: {name: value}}


SEARCHABLE = [spec for spec in safety.SPECS if not spec.derived]
FLOATS = [s for s in SEARCHABLE if s.kind == "float"]
INTS = [s for s in SEARCHABLE if s.kind == "int"]
BOOLS = [s for s in SEARCHABLE if s.kind == "bool"]
CHOICES = [s for s in SEARCHABLE if s.kind == "choice"]


def ids(specs):
    return [spec.key for spec in specs]


# ---------------------------------------------------------------- the table
def test_table_matches_the_brief_key_list():
    quick = json.loads(config.baseline_path("quick").read_text())
    in_baseline = {f"{section}.{key}" for section, values in quick.items() for key in values}
    assert safety.ALLOWED_KEYS == in_baseline
    assert len(safety.ALLOWED_KEYS) == 35


@pytest.mark.parametrize(
    "key, low, high",
    [
        ("train.learning_rate", 1e-6, 1.0),
        ("train.bptt_horizon", 1, 512),
        ("train.total_timesteps", 1_000, 1_000_000_000),
        ("train.seed", 0, 2_147_483_647),
        ("train.update_epochs", 1, 32),
        ("train.gamma", 0, 0.999999),
        ("train.adam_beta2", 0, 0.9999999),
        ("train.adam_eps", 1e-14, 1e-2),
        ("train.checkpoint_interval", 1, 1_000_000),
        ("env.num_drones", 1, 256),
        ("vec.num_workers", 1, 256),
    ],
)
def test_ranges_are_the_brief_ranges(key, low, high):
    spec = safety.SPEC_BY_KEY[key]
    assert (spec.low, spec.high) == (low, high)


# ---------------------------------------------------------------- per-key checks
@pytest.mark.parametrize("spec", FLOATS, ids=ids(FLOATS))
def test_float_keys(spec):
    assert messages(one(spec.key, spec.low), None) == []
    assert messages(one(spec.key, spec.high), None) == []
    if spec.low == int(spec.low):
        assert messages(one(spec.key, int(spec.low)), None) == [], "floats accept JSON integers"
    above = spec.high * 2 + 1
    assert messages(one(spec.key, above), None) == [f"{spec.key}: {json.dumps(above)} is above the maximum {json.dumps(spec.high)}"]
    below = spec.low - 1
    assert messages(one(spec.key, below), None) == [f"{spec.key}: {json.dumps(below)} is below the minimum {json.dumps(spec.low)}"]
    assert messages(one(spec.key, True), None) == [f"{spec.key}: true is not a number"]
    assert messages(one(spec.key, "0.5"), None) == [f'{spec.key}: "0.5" is not a number']
    assert messages(one(spec.key, None), None) == [f"{spec.key}: null is not a number"]
    for bad in (math.nan, math.inf, -math.inf):
        assert messages(one(spec.key, bad), None) == [f"{spec.key}: {json.dumps(bad)} is not a finite number"]


@pytest.mark.parametrize("spec", INTS, ids=ids(INTS))
def test_int_keys(spec):
    assert messages(one(spec.key, spec.low), None) == []
    assert messages(one(spec.key, spec.high), None) == []
    assert messages(one(spec.key, spec.high + 1), None) == [f"{spec.key}: {spec.high + 1} is above the maximum {spec.high}"]
    assert messages(one(spec.key, spec.low - 1), None) == [f"{spec.key}: {spec.low - 1} is below the minimum {spec.low}"]
    for bad, shown in ((16.5, "16.5"), (float(spec.low), json.dumps(float(spec.low))), (True, "true"), ("8", '"8"'), (math.nan, "NaN")):
        assert messages(one(spec.key, bad), None) == [f"{spec.key}: {shown} is not an integer"]


@pytest.mark.parametrize("spec", BOOLS, ids=ids(BOOLS))
def test_bool_keys(spec):
    assert messages(one(spec.key, True), None) == messages(one(spec.key, False), None) == []
    for bad in ("true", "false", 1, 0, None):
        assert messages(one(spec.key, bad), None) == [f"{spec.key}: {json.dumps(bad)} is not a boolean (use JSON true or false)"]


@pytest.mark.parametrize("spec", CHOICES, ids=ids(CHOICES))
def test_choice_keys(spec):
    for choice in spec.choices:
        assert messages(one(spec.key, choice), None) == []
    for bad in ("nope", spec.choices[0].upper() + "X", 1, None):
        [message] = messages(one(spec.key, bad), None)
        assert message == f"{spec.key}: {json.dumps(bad)} is not one of {', '.join(spec.choices)}"


def test_choice_sets():
    assert safety.SPEC_BY_KEY["train.optimizer"].choices == ("muon", "adam", "adamw")
    assert safety.SPEC_BY_KEY["train.device"].choices == ("mps", "cpu", "cuda")
    assert safety.SPEC_BY_KEY["train.precision"].choices == ("float32", "bfloat16")
    assert "max-autotune-no-cudagraphs" in safety.SPEC_BY_KEY["train.compile_mode"].choices
    assert safety.SPEC_BY_KEY["autopilot.save_strategy"].choices == ("best", "latest", "all")


@pytest.mark.parametrize("value", ["latest", "best", "autopilot/models/run_3/model_000200.pt", "/abs/m.pt"])
def test_resume_from_accepts_points_and_checkpoints(value):
    assert messages(one("autopilot.resume_from", value)) == []


@pytest.mark.parametrize("value", ["newest", "model.pth", ".pt", "  .pt", 3, None, True])
def test_resume_from_refuses_other_values(value):
    [message] = messages(one("autopilot.resume_from", value))
    assert message.startswith("autopilot.resume_from: ")
    assert "checkpoint path ending in .pt" in message


def test_example_message_of_the_brief():
    assert messages({"train": {"learning_rate": 2.0}}) == ["train.learning_rate: 2.0 is above the maximum 1.0"]
    assert messages({"train": {"bptt_horizon": 16.5}}) == ["train.bptt_horizon: 16.5 is not an integer"]


def test_integer_too_large_for_a_float_is_out_of_range():
    assert messages(one("train.gamma", 10**400))[0].endswith("is above the maximum 0.999999")
    assert messages(one("train.gamma", -(10**400)))[0].endswith("is below the minimum 0.0")


def test_long_values_are_shortened_to_keep_one_line():
    [message] = messages(one("train.optimizer", "x" * 500 + "\nsecond line"))
    assert "\n" not in message and len(message) < 120


def test_nan_through_json_loads_is_refused_but_read_json_refuses_it_first(tmp_path):
    # Python's json.loads accepts the NaN literal, so validate must catch it too.
    proposal = json.loads('{"train": {"ent_coef": NaN, "gamma": Infinity}}')
    assert messages(proposal) == ["train.ent_coef: NaN is not a finite number", "train.gamma: Infinity is not a finite number"]
    path = tmp_path / "p.json"
    path.write_text('{"train": {"ent_coef": NaN}}')
    with pytest.raises(UserError, match="NaN is not valid JSON"):
        read_json(path)


# ---------------------------------------------------------------- structure
def test_unknown_key_and_section():
    assert messages({"env": {"reward_grip": 1.0}}) == ["env.reward_grip: unknown key"]
    assert messages({"policy": {"hidden": 64}}) == ["policy: unknown section"]


@pytest.mark.parametrize("value, kind", [(5, "a number"), ([1], "an array"), ("x", "a string"), (None, "null"), (True, "a boolean")])
def test_section_must_be_an_object(value, kind):
    assert messages({"train": value}) == [f"train: must be an object, not {kind}"]


@pytest.mark.parametrize("proposal", [[], "x", 3, None])
def test_proposal_must_be_an_object(proposal):
    [problem] = safety.validate(proposal, BASE)
    assert problem.key == "proposal" and "must be a JSON object" in problem.message


def test_every_problem_is_reported():
    proposal = {
        "train": {"learning_rate": -1, "anneal_lr": "yes", "bogus": 1, "batch_size": 7},
        "vec": {"num_envs": 6, "num_workers": 4},
        "policy": {},
        "autopilot": [],
    }
    found = messages(proposal)
    assert len(found) == 7, found
    assert any(m.startswith("train.batch_size: 7 must equal") for m in found)
    assert "vec.num_envs: 6 is not a multiple of vec.num_workers (4)" in found


def test_validate_changes_nothing():
    proposal = {"train": {"bptt_horizon": 16}, "env": {"num_drones": 4}}
    before = copy.deepcopy(proposal)
    baseline = copy.deepcopy(BASE)
    assert safety.validate(proposal, baseline) == []
    assert proposal == before and baseline == BASE


def test_problem_string():
    problem = safety.Problem("train.seed", "-1 is below the minimum 0")
    assert str(problem) == "train.seed: -1 is below the minimum 0"


def test_full_config_requires_every_key():
    assert safety.validate(BASE, complete=True) == []
    partial = copy.deepcopy(BASE)
    del partial["train"]["gamma"]
    del partial["autopilot"]
    found = [str(p) for p in safety.validate(partial, complete=True)]
    assert found == ["train.gamma: missing", "autopilot: missing section"]


def test_full_config_may_omit_the_derived_sizes():
    cfg = copy.deepcopy(BASE)
    for name in safety.DERIVED:
        del cfg["train"][name]
    assert safety.validate(cfg, complete=True) == []


# ---------------------------------------------------------------- topology and batch sizes
def test_divisibility_on_the_merged_config():
    assert messages({"vec": {"num_workers": 3}}) == ["vec.num_envs: 4 is not a multiple of vec.num_workers (3)"]
    assert messages({"vec": {"num_workers": 3, "num_envs": 6}}) == []
    assert messages({"vec": {"num_envs": 5}}) == ["vec.num_envs: 5 is not a multiple of vec.num_workers (2)"]


def test_any_worker_count_in_range_is_accepted_whatever_the_machine():
    proposal = {"vec": {"num_workers": 28, "num_envs": 56}}
    assert messages(proposal) == []


def test_required_sizes_only_where_the_proposal_changes_them():
    def required(proposal):
        return [str(p) for p in safety.validate(proposal, BASE, require_sizes=True)]

    assert required({"train": {"gamma": 0.9}}) == []
    assert required({"env": {"num_drones": 4}})[0].startswith(
        "train.batch_size, train.minibatch_size, train.max_minibatch_size: missing: the proposal changes env.num_drones")
    # one size given and right: the two others are still missing
    found = required({"train": {"bptt_horizon": 64, "batch_size": SIZE * 2}})
    assert found == [f"train.minibatch_size, train.max_minibatch_size: missing: the proposal changes "
                     f"train.bptt_horizon, so they must be given as {safety._BATCH_FORMULA} = {SIZE * 2} "
                     "(validate --clamp adds them)"]
    # the same product from another topology keeps the baseline's sizes right
    assert required({"env": {"num_drones": BASE["env"]["num_drones"] // 2,
                             "num_envs": BASE["env"]["num_envs"] * 2}}) == []
    # without a baseline nothing is known about the sizes the pipeline would keep
    assert [str(p) for p in safety.validate({"env": {"num_drones": 4}}, None, require_sizes=True)] == []


def test_batch_sizes_may_be_omitted_or_must_match():
    assert messages({"env": {"num_drones": 4}}) == []
    expected = SIZE // 4
    sizes = {name: expected for name in safety.DERIVED}
    assert messages({"env": {"num_drones": 4}, "train": sizes}) == []
    found = messages({"env": {"num_drones": 4}, "train": {"batch_size": SIZE}})
    assert found == [f"train.batch_size: {SIZE} must equal env.num_envs × env.num_drones × vec.num_envs × train.bptt_horizon = {expected}"]


def test_each_derived_size_is_checked():
    found = messages({"train": {"batch_size": SIZE, "minibatch_size": 1, "max_minibatch_size": 2}})
    assert [m.split(":")[0] for m in found] == ["train.minibatch_size", "train.max_minibatch_size"]
    assert all(str(SIZE) in m for m in found)


def test_brief_example_override_is_valid():
    example = {
        "train": {"learning_rate": 0.0032, "ent_coef": 0.10, "bptt_horizon": 16,
                  "batch_size": 28672, "minibatch_size": 28672, "max_minibatch_size": 28672},
        "env": {"num_envs": 4, "num_drones": 8},
        "vec": {"num_workers": 28, "num_envs": 56},
    }
    assert messages(example) == []


def test_without_baseline_sizes_must_agree_with_each_other():
    assert messages({"train": {"batch_size": 64, "minibatch_size": 64}}, None) == []
    assert messages({"train": {"batch_size": 64, "minibatch_size": 32}}, None) == [
        "train.minibatch_size: 32 must equal train.batch_size (64)"
    ]


def test_rules_skip_keys_already_reported():
    # A bad worker count is reported once, not again as a divisibility problem.
    assert messages({"vec": {"num_workers": 0}}) == ["vec.num_workers: 0 is below the minimum 1"]


def test_with_derived_fills_sizes_from_the_merged_config():
    out = safety.with_derived({"train": {"bptt_horizon": 8}}, BASE)
    assert out["train"] == {"bptt_horizon": 8, **{name: SIZE // 4 for name in safety.DERIVED}}
    assert safety.with_derived({"env": {"num_envs": 2}}) == {"env": {"num_envs": 2}}


# ---------------------------------------------------------------- clamp
def clamped(proposal, cores=64):
    return safety.clamp(proposal, BASE, cores=cores)


def test_clamp_clips_numbers_and_records_it():
    out, notes = clamped({"train": {"learning_rate": 2.0, "ent_coef": -0.5, "vf_coef": 50}})
    assert out["train"]["learning_rate"] == 1.0
    assert out["train"]["ent_coef"] == 0.0
    assert out["train"]["vf_coef"] == 10.0
    assert notes == [
        "train.learning_rate: 2.0 is above the maximum 1.0; set to 1.0",
        "train.ent_coef: -0.5 is below the minimum 0.0; set to 0.0",
        "train.vf_coef: 50 is above the maximum 10.0; set to 10.0",
    ]


def test_clamp_rounds_integers_half_up_then_clips():
    out, notes = clamped({"train": {"bptt_horizon": 16.5, "update_epochs": 99.2, "seed": -3.7}})
    assert out["train"]["bptt_horizon"] == 17
    assert out["train"]["update_epochs"] == 32
    assert out["train"]["seed"] == 0
    assert all(isinstance(out["train"][k], int) for k in ("bptt_horizon", "update_epochs", "seed"))
    assert len(notes) == 3


@pytest.mark.parametrize(
    "key, bad",
    [
        ("train.anneal_lr", "false"),
        ("train.optimizer", "sgd"),
        ("train.device", "tpu"),
        ("train.learning_rate", "0.1"),
        ("train.learning_rate", math.nan),
        ("train.ent_coef", math.inf),
        ("train.bptt_horizon", True),
        ("autopilot.resume_from", "model.pth"),
        ("autopilot.save_strategy", None),
    ],
)
def test_clamp_uses_the_baseline_value_for_unusable_values(key, bad):
    section, name = key.split(".")
    out, [note] = clamped(one(key, bad))
    assert out[section][name] == BASE[section][name]
    assert note.startswith(f"{key}: ") and note.endswith(f"baseline value {json.dumps(BASE[section][name])} used")


def test_clamp_drops_unknown_things():
    out, notes = clamped({"policy": {"x": 1}, "env": {"reward_grip": 2, "num_drones": 4}, "vec": 7})
    assert out == {"env": {"num_drones": 4}, "train": {name: SIZE // 4 for name in safety.DERIVED}}
    assert notes == [
        "policy: unknown section; dropped",
        "env.reward_grip: unknown key; dropped",
        "vec: a number instead of an object; dropped",
    ]


def test_clamp_of_a_non_object_proposal():
    out, notes = clamped([1, 2])
    assert out == {"train": {name: SIZE for name in safety.DERIVED}}
    assert notes == ["proposal: an array instead of an object; ignored"]


def test_clamp_keeps_workers_within_the_cores():
    out, notes = clamped({"vec": {"num_workers": 28, "num_envs": 56}}, cores=8)
    assert out["vec"] == {"num_workers": 8, "num_envs": 56}
    assert notes == ["vec.num_workers: 28 is above this machine's 8 cores; set to 8"]


def test_clamp_caps_the_baseline_workers_too():
    out, notes = clamped({}, cores=1)
    assert out["vec"] == {"num_workers": 1}
    assert len(notes) == 1


def test_clamp_without_a_machine_keeps_any_worker_count_in_the_brief_range(monkeypatch):
    """A proposal may be meant for another machine: only the run's machine caps workers."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    out, notes = safety.clamp({"vec": {"num_workers": 28, "num_envs": 56}}, BASE)
    assert out["vec"] == {"num_workers": 28, "num_envs": 56}
    assert not any("num_workers" in note for note in notes)


@pytest.mark.parametrize(
    "envs, workers, expected",
    [(6, 4, 8), (5, 4, 4), (7, 4, 8), (1, 4, 4), (255, 2, 256), (250, 100, 200), (130, 128, 128), (256, 3, 255)],
)
def test_clamp_moves_num_envs_to_the_nearest_multiple_in_range(envs, workers, expected):
    out, notes = clamped({"vec": {"num_envs": envs, "num_workers": workers}}, cores=256)
    assert out["vec"]["num_envs"] == expected
    assert notes == [f"vec.num_envs: {envs} is not a multiple of vec.num_workers ({workers}); set to {expected}"]


def test_clamp_derives_batch_sizes_and_replaces_wrong_ones():
    out, notes = clamped({"train": {"bptt_horizon": 64, "batch_size": 5, "minibatch_size": SIZE * 2}})
    assert {out["train"][name] for name in safety.DERIVED} == {SIZE * 2}
    assert notes == [f"train.batch_size: 5 must equal {safety._BATCH_FORMULA}; set to the derived {SIZE * 2}"]


def test_clamp_records_nothing_for_a_valid_proposal():
    proposal = {"train": {"learning_rate": 0.001, "ent_coef": 0}, "autopilot": {"resume_mode": "continue"}}
    before = copy.deepcopy(proposal)
    out, notes = clamped(proposal)
    assert notes == []
    assert out == {**proposal, "train": {**proposal["train"], **{name: SIZE for name in safety.DERIVED}}}
    assert proposal == before


# A JSON-like value of any type; floats include NaN/inf as json.loads may produce them.
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["adam", "cpu", "latest", "best", "m.pt", "bfloat16", "continue", "all", "default"]),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
KEY_NAMES = st.sampled_from(sorted({k.split(".")[1] for k in safety.ALLOWED_KEYS})) | st.text(max_size=8)
SECTION = st.dictionaries(KEY_NAMES, JSON_VALUES, max_size=10) | JSON_VALUES
PROPOSALS = st.dictionaries(st.sampled_from([*safety.SECTIONS, "policy", "sweep"]) | st.text(max_size=6), SECTION, max_size=6) | JSON_VALUES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proposal=PROPOSALS, cores=st.integers(1, 300), baseline=st.sampled_from([BASE, QUICK, FULL]))
def test_clamp_output_validates_and_clamp_is_idempotent(proposal, cores, baseline):
    before = repr(proposal)
    out, _ = safety.clamp(proposal, baseline, cores=cores)
    assert safety.validate(out, baseline) == []
    assert safety.merge(baseline, out)["vec"]["num_workers"] <= cores
    again, notes = safety.clamp(out, baseline, cores=cores)
    assert again == out
    assert notes == []
    assert repr(proposal) == before, "clamp must not mutate its input"


# ---------------------------------------------------------------- relative overrides
def test_overrides_relative_keeps_only_differences():
    effective = safety.merge(BASE, safety.with_derived({"env": {"num_drones": 4}, "train": {"gamma": 0.99}}, BASE))
    relative = safety.overrides_relative(effective, BASE)
    assert relative == {"env": {"num_drones": 4}, "train": {name: SIZE // 4 for name in safety.DERIVED}}


def test_overrides_relative_number_types_and_new_keys():
    effective = safety.merge(BASE, {"train": {"vf_coef": 2, "anneal_lr": 1}, "extra": {"a": 1}})
    relative = safety.overrides_relative(effective, BASE)
    # 2 equals the baseline's 2.0, but the integer 1 is not the boolean true.
    assert relative == {"train": {"anneal_lr": 1}, "extra": {"a": 1}}
    assert safety.overrides_relative(BASE, BASE) == {}


def test_review_results():
    ok = safety.review({"train": {"gamma": 0.98}}, BASE)
    assert ok.valid and ok.problems == [] and ok.overrides["train"]["batch_size"] == SIZE
    # a proposal is held to the brief: a topology change carries its derived sizes
    sized = {"env": {"num_drones": 2}, "train": {name: SIZE // 8 for name in safety.DERIVED}}
    assert safety.review(sized, BASE).valid
    unsized = safety.review({"env": {"num_drones": 2}}, BASE)
    assert not unsized.valid and [p.split(":")[0] for p in unsized.problems] == [
        "train.batch_size, train.minibatch_size, train.max_minibatch_size"]
    assert str(SIZE // 8) in unsized.problems[0]
    bad = safety.review({"train": {"gamma": 1.5}}, BASE)
    assert not bad.valid and bad.problems == ["train.gamma: 1.5 is above the maximum 0.999999"]
    assert bad.overrides == {"train": {"gamma": 1.5}}
    fixed = safety.review({"train": {"gamma": 1.5}}, BASE, repair=True, cores=4)
    assert not fixed.valid and fixed.overrides["train"]["gamma"] == 0.999999 and len(fixed.adjustments) == 1
    assert set(fixed.to_dict()) == {"valid", "problems", "overrides", "adjustments", "warnings"}


def test_load_baseline_rejects_unsafe_files(tmp_path):
    cfg = copy.deepcopy(BASE)
    cfg["train"]["learning_rate"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="train.learning_rate: 3 is above the maximum 1.0"):
        config.load_baseline(path)
