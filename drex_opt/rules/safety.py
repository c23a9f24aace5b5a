"""The brief's safety rules: allowed keys and ranges, derived batch sizes, topology.

``validate`` reports every problem and changes nothing; ``clamp`` repairs any JSON-like
proposal so that it validates. Both read one table, :data:`SPECS`; the pydantic models
that check types and ranges are generated from it. Overrides merge into a configuration
with :func:`merge`, and :func:`derive_batch_sizes` gives the sizes the topology implies.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

Kind = Literal["float", "int", "bool", "choice", "checkpoint"]

# The factors of train.batch_size, in the brief's order.
TOPOLOGY = (("env", "num_envs"), ("env", "num_drones"), ("vec", "num_envs"), ("train", "bptt_horizon"))
DERIVED = ("batch_size", "minibatch_size", "max_minibatch_size")


@dataclass(frozen=True)
class KeySpec:
    """One allowed key: its type and inclusive range (numbers) or choices (strings)."""

    section: str
    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    derived: bool = False

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def _float(section: str, name: str, low: float, high: float) -> KeySpec:
    return KeySpec(section, name, "float", float(low), float(high))


def _int(section: str, name: str, low: int, high: int, derived: bool = False) -> KeySpec:
    return KeySpec(section, name, "int", low, high, derived=derived)


def _bool(section: str, name: str) -> KeySpec:
    return KeySpec(section, name, "bool")


def _choice(section: str, name: str, *choices: str) -> KeySpec:
    return KeySpec(section, name, "choice", choices=choices)


MAX_COUNT = 256
# The largest batch the topology ranges allow, so a derived size is never out of range.
MAX_BATCH = MAX_COUNT**3 * 512
RESUME_POINTS = ("latest", "best")

SPECS: tuple[KeySpec, ...] = (
    _float("train", "learning_rate", 1e-6, 1.0),
    _float("train", "ent_coef", 0, 1),
    _int("train", "bptt_horizon", 1, 512),
    _int("train", "total_timesteps", 1_000, 1_000_000_000),
    _int("train", "seed", 0, 2_147_483_647),
    _int("train", "update_epochs", 1, 32),
    _float("train", "gae_lambda", 0, 1),
    _float("train", "gamma", 0, 0.999999),
    _float("train", "clip_coef", 0, 1),
    _float("train", "vf_clip_coef", 0, 10),
    _choice("train", "optimizer", "muon", "adam", "adamw"),
    _float("train", "vf_coef", 0, 10),
    _float("train", "max_grad_norm", 0, 100),
    _int("train", "checkpoint_interval", 1, 1_000_000),
    _float("train", "adam_beta1", 0, 0.999999),
    _float("train", "adam_beta2", 0, 0.9999999),
    _float("train", "adam_eps", 1e-14, 1e-2),
    _bool("train", "anneal_lr"),
    _bool("train", "torch_deterministic"),
    _bool("train", "cpu_offload"),
    _bool("train", "compile"),
    _bool("train", "compile_fullgraph"),
    _choice("train", "precision", "float32", "bfloat16"),
    # The modes torch.compile accepts; PufferLib's default is the last one.
    _choice("train", "compile_mode", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    _choice("train", "device", "mps", "cpu", "cuda"),
    _int("train", "batch_size", 1, MAX_BATCH, derived=True),
    _int("train", "minibatch_size", 1, MAX_BATCH, derived=True),
    _int("train", "max_minibatch_size", 1, MAX_BATCH, derived=True),
    _int("env", "num_envs", 1, MAX_COUNT),
    _int("env", "num_drones", 1, MAX_COUNT),
    _int("vec", "num_envs", 1, MAX_COUNT),
    _int("vec", "num_workers", 1, MAX_COUNT),
    _choice("autopilot", "resume_mode", "fresh", "continue"),
    KeySpec("autopilot", "resume_from", "checkpoint", choices=RESUME_POINTS),
    _choice("autopilot", "save_strategy", "best", "latest", "all"),
)

SPEC_BY_KEY: dict[str, KeySpec] = {spec.key: spec for spec in SPECS}
ALLOWED_KEYS: frozenset[str] = frozenset(SPEC_BY_KEY)
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(spec.section for spec in SPECS))
_BATCH_FORMULA = "env.num_envs × env.num_drones × vec.num_envs × train.bptt_horizon"


@dataclass(frozen=True)
class Problem:
    """One broken rule: the ``section.key`` (or section) concerned and what is wrong."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


# ---------------------------------------------------------------- dotted keys
def nest(proposal: Any) -> tuple[Any, list[Problem]]:
    """The proposal with the brief's dotted keys (``"train.learning_rate": 0.001``) nested.

    The brief names keys as ``section.key``; a proposal may write them that way at the top
    level. A dotted key whose section is unknown stays as written (validation names it).
    The same key given in both forms must hold the same value, else it is a problem and
    the nested value is kept. Returns (a new proposal, the conflicts); a non-object is
    returned as is.
    """
    if not isinstance(proposal, dict):
        return proposal, []
    nested: dict = {key: (dict(values) if isinstance(values, dict) else values)
                    for key, values in proposal.items() if not _dotted(key)}
    problems: list[Problem] = []
    for key, value in proposal.items():
        if not _dotted(key):
            continue
        section, name = key.split(".", 1)
        target = nested.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # the section's own error is reported by validation
        if name in target and not _same(target[name], value):
            problems.append(Problem(key, f"given twice with different values: {show(target[name])} in the "
                                         f"{section!r} object and {show(value)} as {key!r}"))
            continue
        target[name] = value
    return nested, problems


def _dotted(key: Any) -> bool:
    return isinstance(key, str) and "." in key and key.split(".", 1)[0] in SECTIONS


# ---------------------------------------------------------------- merging and derived sizes
def merge(base: dict, overrides: dict) -> dict:
    """Deep-merge ``overrides`` into ``base`` section by section; neither is mutated.

    A section present in both as objects is merged key by key; anything else in
    ``overrides`` (a new section, a non-object value) replaces what ``base`` had.
    """
    merged = copy.deepcopy(base)
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(copy.deepcopy(values))
        else:
            merged[section] = copy.deepcopy(values)
    return merged


def _count(cfg: dict, section: str, key: str) -> int | None:
    """A positive integer factor of the batch size, or None when missing or malformed."""
    values = cfg.get(section)
    value = values.get(key) if isinstance(values, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def derive_batch_sizes(cfg: dict) -> dict:
    """``{"batch_size": n, "minibatch_size": n, "max_minibatch_size": n}`` for ``cfg``.

    ``n = env.num_envs × env.num_drones × vec.num_envs × train.bptt_horizon``.
    Returns ``{}`` when a factor is missing or not a positive integer (nothing to derive).
    """
    size = 1
    for section, key in TOPOLOGY:
        factor = _count(cfg, section, key)
        if factor is None:
            return {}
        size *= factor
    return {name: size for name in DERIVED}


# ---------------------------------------------------------------- generated models
def _checkpoint(value: str) -> str:
    # A bare ".pt" names no file, hence the length check.
    if value in RESUME_POINTS or (value.endswith(".pt") and len(value.strip()) > 3):
        return value
    raise ValueError("not a resume point")


def _annotation(spec: KeySpec) -> Any:
    if spec.kind == "float":
        return Annotated[float, Field(ge=spec.low, le=spec.high)]
    if spec.kind == "int":
        return Annotated[int, Field(ge=spec.low, le=spec.high)]
    if spec.kind == "bool":
        return bool
    if spec.kind == "choice":
        return Literal[spec.choices]
    return Annotated[str, AfterValidator(_checkpoint)]


def _section_model(section: str, complete: bool) -> type[BaseModel]:
    """Strict model of one section; ``complete`` makes every non-derived key required."""
    fields = {
        spec.name: (_annotation(spec), ... if complete and not spec.derived else None)
        for spec in SPECS
        if spec.section == section
    }
    config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    suffix = "Config" if complete else "Overrides"
    return create_model(f"{section.capitalize()}{suffix}", __config__=config, **fields)


_MODELS: dict[tuple[str, bool], type[BaseModel]] = {
    (section, complete): _section_model(section, complete) for section in SECTIONS for complete in (False, True)
}


# ---------------------------------------------------------------- messages
def show(value: Any) -> str:
    """A value as JSON text on one line, shortened when long (a message must stay short)."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, (list, tuple)) else "an object"


def _message(spec: KeySpec, error: dict) -> str:
    """Our one-line wording of a pydantic error on ``spec``."""
    kind, value = error["type"], error.get("input")
    shown = show(value)
    if kind == "missing":
        return "missing"
    if kind == "greater_than_equal" or (kind == "float_type" and _is_int(value) and value < 0):
        return f"{shown} is below the minimum {show(spec.low)}"
    # An integer too large for a float fails the float type check; it is out of range.
    if kind == "less_than_equal" or (kind == "float_type" and _is_int(value)):
        return f"{shown} is above the maximum {show(spec.high)}"
    if kind == "finite_number":
        return f"{shown} is not a finite number"
    if spec.kind == "float":
        return f"{shown} is not a number"
    if spec.kind == "int":
        return f"{shown} is not an integer"
    if spec.kind == "bool":
        return f"{shown} is not a boolean (use JSON true or false)"
    if spec.kind == "choice":
        return f"{shown} is not one of {', '.join(spec.choices)}"
    return f"{shown} is not latest, best or a checkpoint path ending in .pt"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _section_problems(section: str, values: dict, complete: bool) -> list[Problem]:
    try:
        _MODELS[section, complete].model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0])
            spec = SPEC_BY_KEY.get(f"{section}.{name}")
            message = "unknown key" if spec is None else _message(spec, error)
            problems.append(Problem(f"{section}.{name}", message))
        return problems
    return []


# ---------------------------------------------------------------- validate
def validate(overrides: Any, baseline: dict | None = None, *, complete: bool = False,
             require_sizes: bool = False) -> list[Problem]:
    """Every problem of ``overrides`` against the brief's rules; nothing is changed.

    Args:
        overrides: a proposal (sections may be partial), or a full config.
        baseline: the config the overrides apply to; the topology and batch-size rules are
            checked on the merged result. Without it they are checked where the overrides
            alone give enough to check.
        complete: require every non-derived key (a full config rather than overrides).
        require_sizes: hold a proposal to the brief's letter: derived batch sizes that the
            proposal changes must be given (a pipeline that merges it as is would
            otherwise keep the baseline's). drex-opt itself derives them when it merges.

    Edge cases: dotted keys (``"train.learning_rate"``) count as nested ones (see
    :func:`nest`). Derived batch sizes that are not given are fine unless ``require_sizes``
    (they get derived); given ones must equal the derived value. Any worker count or
    device inside the rules is accepted: this machine's limits are
    :mod:`drex_opt.rules.machine`'s, checked only where a run trains here.
    """
    if not isinstance(overrides, dict):
        return [Problem("proposal", f"must be a JSON object, not {_kind_name(overrides)}")]
    overrides, problems = nest(overrides)
    for section, values in overrides.items():
        if section not in SECTIONS:
            problems.append(Problem(str(section), "unknown section"))
        elif not isinstance(values, dict):
            problems.append(Problem(section, f"must be an object, not {_kind_name(values)}"))
        else:
            problems += _section_problems(section, values, complete)
    if complete:
        problems += [Problem(section, "missing section") for section in SECTIONS if section not in overrides]
    bad = {problem.key for problem in problems}
    # A full config gets its sizes filled in when loaded; only a proposal must carry them.
    check_missing = require_sizes and baseline is not None and not complete
    return problems + _rule_problems(overrides, merge(baseline or {}, overrides), bad, check_missing)


def _rule_problems(overrides: dict, effective: dict, bad: set[str], check_missing: bool) -> list[Problem]:
    """Topology and batch-size rules, skipped where a key involved is already reported."""

    def value(key: str) -> Any:
        section, name = key.split(".")
        values = effective.get(section)
        return values.get(name) if isinstance(values, dict) and key not in bad and section not in bad else None

    problems = []
    envs, workers = value("vec.num_envs"), value("vec.num_workers")
    if _is_int(envs) and _is_int(workers) and workers > 0 and envs % workers:
        problems.append(Problem("vec.num_envs", f"{envs} is not a multiple of vec.num_workers ({workers})"))

    train = overrides.get("train")
    given = {
        name: train[name]
        for name in DERIVED
        if isinstance(train, dict) and name in train and f"train.{name}" not in bad
    }
    topology_ok = all(f"{s}.{k}" not in bad and s not in bad for s, k in TOPOLOGY)
    sizes = derive_batch_sizes(effective) if topology_ok else {}
    if check_missing:
        problems += _missing_sizes(overrides, effective, given, sizes, bad)
    for name, size in given.items():
        if sizes and size != sizes[name]:
            problems.append(Problem(f"train.{name}", f"{show(size)} must equal {_BATCH_FORMULA} = {sizes[name]}"))
        elif not sizes and topology_ok and size != next(iter(given.values())):
            # Nothing to derive from, but the three sizes must still agree.
            first = next(iter(given))
            problems.append(Problem(f"train.{name}", f"{show(size)} must equal train.{first} ({given[first]})"))
    return problems


def _missing_sizes(overrides: dict, effective: dict, given: dict, sizes: dict, bad: set[str]) -> list[Problem]:
    """Derived sizes a proposal must give because it changes them, yet leaves out.

    The brief asks every proposal to carry the batch sizes derived from its topology: a
    pipeline that merges the proposal into the baseline as is would otherwise train with
    the baseline's sizes. Sizes that stay what the baseline already says need not be given.
    """
    train = overrides.get("train")
    if not sizes or (train is not None and not isinstance(train, dict)) or "train" in bad:
        return []
    base_train = effective.get("train") if isinstance(effective.get("train"), dict) else {}
    missing = [name for name in DERIVED
               if name not in given and f"train.{name}" not in bad and base_train.get(name) != sizes[name]]
    if not missing:
        return []
    changed = [f"{s}.{k}" for s, k in TOPOLOGY if isinstance(overrides.get(s), dict) and k in overrides[s]]
    because = f"the proposal changes {', '.join(changed)}" if changed else "the baseline's sizes do not match it"
    they = "it" if len(missing) == 1 else "they"
    return [Problem(", ".join(f"train.{name}" for name in missing),
                    f"missing: {because}, so {they} must be given as {_BATCH_FORMULA} = {sizes[missing[0]]} "
                    "(validate --clamp adds them)")]


def with_derived(overrides: dict, baseline: dict | None = None) -> dict:
    """``overrides`` plus the derived batch sizes of the merged config (a new dict).

    Meant for valid overrides: given batch sizes are replaced by the derived ones. When
    the merged config lacks a factor of the batch size, ``overrides`` is returned as is.
    """
    sizes = derive_batch_sizes(merge(baseline or {}, overrides))
    return merge(overrides, {"train": sizes}) if sizes else merge({}, overrides)


# ---------------------------------------------------------------- clamp
def _nearest_number(spec: KeySpec, value: Any) -> int | float | None:
    """The in-range number closest to ``value``, or None when ``value`` is no usable number."""
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if spec.kind == "int" and isinstance(value, float):
        value = math.floor(value + 0.5)  # round half up: Python's round() goes to even
    return min(max(value, spec.low), spec.high)


def clamp(overrides: Any, baseline: dict, cores: int | None = None,
          devices: tuple[str, ...] | None = None) -> tuple[dict, list[str]]:
    """Repair any JSON-like proposal so that it validates against ``baseline``.

    Numbers are clipped into range (integers rounded half up); a wrong type, NaN/inf or
    an unknown choice takes the baseline's value; unknown sections and keys, non-object
    sections and a non-object proposal are dropped; dotted keys are nested (on a conflict
    the nested value is kept). ``vec.num_envs`` is moved to the nearest multiple of
    ``vec.num_workers`` inside the range. The derived batch sizes are always included.

    Args:
        overrides: the proposal; never mutated.
        baseline: a valid full config (as :func:`drex_opt.rules.config.load_baseline` returns).
        cores: the machine the run trains on: ``vec.num_workers`` is kept at most this
            (None: no cap, the brief's range only).
        devices: the torch devices of that machine: another ``train.device`` becomes
            ``cpu``, and ``bfloat16`` becomes ``float32`` off CUDA (None: not checked).

    Returns:
        (repaired overrides, one human sentence per change). Clamping the result again
        changes nothing and records nothing.
    """
    adjustments: list[str] = []
    if not isinstance(overrides, dict):
        adjustments.append(f"proposal: {_kind_name(overrides)} instead of an object; ignored")
        overrides = {}
    overrides, conflicts = nest(overrides)
    adjustments += [f"{conflict}; the nested value kept" for conflict in conflicts]
    repaired: dict[str, dict] = {}
    for section, values in overrides.items():
        if section not in SECTIONS:
            adjustments.append(f"{section}: unknown section; dropped")
            continue
        if not isinstance(values, dict):
            adjustments.append(f"{section}: {_kind_name(values)} instead of an object; dropped")
            continue
        for name, value in values.items():
            spec = SPEC_BY_KEY.get(f"{section}.{name}")
            if spec is None:
                adjustments.append(f"{section}.{name}: unknown key; dropped")
            elif not spec.derived:
                keep, fixed = _clamp_value(spec, value, baseline, adjustments)
                if keep:
                    repaired.setdefault(section, {})[name] = fixed

    _fit_topology(repaired, baseline, cores, adjustments)
    if devices is not None:
        _fit_device(repaired, baseline, devices, adjustments)
    sizes = derive_batch_sizes(merge(baseline, repaired))
    given = overrides.get("train") if isinstance(overrides.get("train"), dict) else {}
    for name in DERIVED:
        if name in given and not (_is_int(given[name]) and given[name] == sizes.get(name)):
            outcome = f"set to the derived {sizes[name]}" if sizes else "dropped (nothing to derive it from)"
            adjustments.append(f"train.{name}: {show(given[name])} must equal {_BATCH_FORMULA}; {outcome}")
    if sizes:
        repaired.setdefault("train", {}).update(sizes)
    return repaired, adjustments


def _clamp_value(spec: KeySpec, value: Any, baseline: dict, adjustments: list[str]) -> tuple[bool, Any]:
    """(keep, value): ``value`` if valid, else the nearest number or the baseline's value."""
    problems = _section_problems(spec.section, {spec.name: value}, complete=False)
    if not problems:
        return True, value
    nearest = _nearest_number(spec, value) if spec.kind in ("float", "int") else None
    base_values = baseline.get(spec.section, {})
    if nearest is not None:
        adjustments.append(f"{problems[0]}; set to {show(nearest)}")
        return True, nearest
    if spec.name in base_values:
        adjustments.append(f"{problems[0]}; baseline value {show(base_values[spec.name])} used")
        return True, base_values[spec.name]
    adjustments.append(f"{problems[0]}; dropped (the baseline has no value for it)")
    return False, None


def _fit_topology(repaired: dict, baseline: dict, cores: int | None, adjustments: list[str]) -> None:
    """Cap the workers at the core count (when given), then make vec.num_envs a multiple of them."""
    vec = merge(baseline, repaired).get("vec", {})
    workers, envs = vec.get("num_workers"), vec.get("num_envs")
    if not (_is_int(workers) and _is_int(envs)):
        return
    cores = None if cores is None else max(1, cores)
    if cores is not None and workers > cores:
        adjustments.append(f"vec.num_workers: {workers} is above this machine's {cores} cores; set to {cores}")
        workers = cores
        repaired.setdefault("vec", {})["num_workers"] = workers
    if envs % workers:
        nearest = min(max(workers, math.floor(envs / workers + 0.5) * workers), MAX_COUNT // workers * workers)
        adjustments.append(f"vec.num_envs: {envs} is not a multiple of vec.num_workers ({workers}); set to {nearest}")
        repaired.setdefault("vec", {})["num_envs"] = nearest


def _fit_device(repaired: dict, baseline: dict, devices: tuple[str, ...], adjustments: list[str]) -> None:
    """A device this machine has, and a precision that device really trains in."""
    train = merge(baseline, repaired).get("train", {})
    device, precision = train.get("device"), train.get("precision")
    if device not in devices:
        adjustments.append(f"train.device: {show(device)} is not available on this machine "
                           f"(it has {', '.join(devices)}); set to \"cpu\"")
        device = "cpu"
        repaired.setdefault("train", {})["device"] = device
    if precision == "bfloat16" and device != "cuda":
        adjustments.append(f"train.precision: \"bfloat16\" trains as float32 on {device}; set to \"float32\"")
        repaired.setdefault("train", {})["precision"] = "float32"


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``1`` equals ``1.0``, but ``true`` is not ``1``."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- relative overrides & review
def overrides_relative(effective: dict, baseline: dict) -> dict:
    """The keys of ``effective`` whose value differs from ``baseline`` (a new dict).

    Keys absent from ``baseline`` count as different; keys only in ``baseline`` are
    ignored. The derived batch sizes appear whenever they differ, like any other key.
    """
    relative: dict[str, Any] = {}
    for section, values in effective.items():
        base_values = baseline.get(section)
        if isinstance(values, dict) and isinstance(base_values, dict):
            changed = {k: v for k, v in values.items() if k not in base_values or not _same(v, base_values[k])}
            if changed:
                relative[section] = changed
        elif not _same(values, base_values):
            relative[section] = values
    return merge({}, relative)


@dataclass
class Review:
    """What ``drex-opt validate`` reports: ``valid``/``problems`` describe the proposal as
    given; ``overrides`` is what to use (nested, with derived batch sizes; repaired under
    clamp); ``warnings`` are advice that never makes a proposal invalid."""

    valid: bool
    problems: list[str]
    overrides: dict
    adjustments: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def review(proposal: Any, baseline: dict, repair: bool = False, cores: int | None = None,
           devices: tuple[str, ...] | None = None) -> Review:
    """Validate ``proposal`` against ``baseline``; with ``repair``, also clamp it.

    ``cores`` and ``devices`` are passed to :func:`clamp` (the machine the run trains on).
    Without ``repair`` an invalid proposal is returned unchanged as ``overrides``.
    """
    problems = [str(problem) for problem in validate(proposal, baseline, require_sizes=True)]
    if repair:
        repaired, adjustments = clamp(proposal, baseline, cores, devices)
        return Review(not problems, problems, repaired, adjustments)
    if problems:
        return Review(False, problems, proposal if isinstance(proposal, dict) else {})
    return Review(True, [], with_derived(nest(proposal)[0], baseline))
