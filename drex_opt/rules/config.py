"""Run configurations on disk: named baselines, loading, and a run's effective config.

A configuration is a plain ``dict`` of sections, each a ``dict`` of keys, exactly as it is
written to and read from JSON; :mod:`drex_opt.rules.safety` holds the rules it must
follow, how overrides merge and which batch sizes derive from the topology.
"""

from __future__ import annotations

from pathlib import Path

from drex_opt import shipped
from drex_opt.errors import UserError
from drex_opt.jsonio import read_json_object
from drex_opt.rules import safety
from drex_opt.rules.safety import merge

BASELINES = {
    "quick": "autopilot/configs/baseline_quick.json",
    "full": "autopilot/configs/baseline_full.json",
}


def baseline_path(name_or_path: str | Path) -> Path:
    """Where a baseline lives: ``"quick"``/``"full"`` or a path to a JSON file.

    A named baseline is looked up in the working directory first (a project may carry
    its own ``autopilot/configs/``), then among the files shipped with drex-opt.
    """
    name = str(name_or_path)
    if name not in BASELINES:
        return Path(name_or_path)
    local = Path.cwd() / BASELINES[name]
    return local if local.is_file() else shipped.baselines_dir() / Path(BASELINES[name]).name


def load_baseline(name_or_path: str | Path) -> dict:
    """Load and validate a full configuration (every key of the brief).

    Derived batch sizes may be omitted (they are filled in); given ones must match.

    Raises:
        UserError: missing file, malformed JSON, or every problem of the config on one line.
    """
    path = baseline_path(name_or_path)
    cfg = read_json_object(path, "config")
    problems = safety.validate(cfg, complete=True)
    if problems:
        raise UserError(f"{path}: " + "; ".join(map(str, problems)))
    return merge(cfg, safety.with_derived({}, cfg))


def resolve(
    config_path: str | Path,
    override: dict | str | Path | None = None,
    extra: dict | None = None,
) -> dict:
    """The effective configuration of a run.

    Args:
        config_path: a full config (``"quick"``, ``"full"`` or a JSON path).
        override: overrides as a dict or a JSON file, merged on top of the config
            (the brief's dotted keys, ``"train.learning_rate"``, count as nested ones).
        extra: further overrides merged last, e.g. ``{"train": {"total_timesteps": N}}``.

    Returns:
        The validated nested dict; batch sizes are derived wherever the overrides changed
        the topology or ``bptt_horizon`` without giving them.

    Raises:
        UserError: every problem found, joined by ``"; "`` on one line.
    """
    base = load_baseline(config_path)
    if override is None:
        override = {}
    elif not isinstance(override, dict):
        override = read_json_object(override, "override file")
    # The override file is checked on its own too: merging ``extra`` could hide a bad section.
    problems = safety.validate(override, base)
    overrides = merge(safety.nest(override)[0], extra or {})
    if not problems:
        problems = safety.validate(overrides, base)
    if problems:
        raise UserError("; ".join(map(str, problems)))
    return merge(base, safety.with_derived(overrides, base))
