"""The run configuration: the brief's nested JSON (train/env/vec/autopilot sections).

A configuration is a plain ``dict`` of sections, each a ``dict`` of keys, exactly as it is
written to and read from JSON; :mod:`drex_opt.safety` holds the rules it must follow.
This module finds and loads baselines, merges overrides and fills the derived batch sizes.
"""

from __future__ import annotations

import copy
from pathlib import Path

from drex_opt.errors import UserError
from drex_opt.jsonio import read_json_object

BASELINES = {
    "quick": "autopilot/configs/baseline_quick.json",
    "full": "autopilot/configs/baseline_full.json",
}

REPO_ROOT = Path(__file__).resolve().parents[1]

# The factors of train.batch_size, in the brief's order.
TOPOLOGY = (("env", "num_envs"), ("env", "num_drones"), ("vec", "num_envs"), ("train", "bptt_horizon"))
DERIVED = ("batch_size", "minibatch_size", "max_minibatch_size")


def baseline_path(name_or_path: str | Path) -> Path:
    """Where a baseline lives: ``"quick"``/``"full"`` or a path to a JSON file.

    A named baseline is looked up in the working directory first (a project may carry
    its own ``autopilot/configs/``), then in this repository.
    """
    name = str(name_or_path)
    if name not in BASELINES:
        return Path(name_or_path)
    local = Path.cwd() / BASELINES[name]
    return local if local.is_file() else REPO_ROOT / BASELINES[name]


def load_baseline(name_or_path: str | Path) -> dict:
    """Load and validate a full configuration (every key of the brief).

    Derived batch sizes may be omitted (they are filled in); given ones must match.

    Raises:
        UserError: missing file, malformed JSON, or every problem of the config on one line.
    """
    from drex_opt import safety  # safety builds on merge/derive below, so it is imported late

    path = baseline_path(name_or_path)
    cfg = read_json_object(path, "config")
    problems = safety.validate(cfg, complete=True)
    if problems:
        raise UserError(f"{path}: " + "; ".join(map(str, problems)))
    return merge(cfg, safety.with_derived({}, cfg))


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


def resolve(
    config_path: str | Path,
    override: dict | str | Path | None = None,
    extra: dict | None = None,
) -> dict:
    """The effective configuration of a run.

    Args:
        config_path: a full config (``"quick"``, ``"full"`` or a JSON path).
        override: overrides as a dict or a JSON file, merged on top of the config.
        extra: further overrides merged last, e.g. ``{"train": {"total_timesteps": N}}``.

    Returns:
        The validated nested dict; batch sizes are derived wherever the overrides changed
        the topology or ``bptt_horizon`` without giving them.

    Raises:
        UserError: every problem found, joined by ``"; "`` on one line.
    """
    from drex_opt import safety

    base = load_baseline(config_path)
    if override is None:
        override = {}
    elif not isinstance(override, dict):
        override = read_json_object(override, "override file")
    # The override file is checked on its own too: merging ``extra`` could hide a bad section.
    problems = safety.validate(override, base)
    overrides = merge(override, extra or {})
    if not problems:
        problems = safety.validate(overrides, base)
    if problems:
        raise UserError("; ".join(map(str, problems)))
    return merge(base, safety.with_derived(overrides, base))
