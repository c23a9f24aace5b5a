"""A drone's checkpoint and what travels with it.

``model.pt`` holds the policy weights (PufferLib's state dict). Beside it:

- ``model.optimizer.pt``: the optimiser's state, so a continued run keeps its Adam moments
  when its configuration uses the same optimiser (else it starts a fresh one, recorded);
- ``model.lineage.json``: how many agent steps this drone has seen in total, counting the
  runs it continued from, and which checkpoint it continued from.

Copies (the autopilot's ``models/best.pt``) carry both files along, so "how far has this
drone trained" has an answer wherever the checkpoint goes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from drex_opt.errors import UserError
from drex_opt.jsonio import write_atomic, write_json_atomic

CHECKPOINT_NAME = "model.pt"


def optimizer_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".optimizer.pt")


def lineage_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".lineage.json")


def read_lineage(checkpoint: str | Path) -> dict | None:
    """The lineage record beside ``checkpoint``; None when absent or unreadable (a foreign file)."""
    try:
        data = json.loads(lineage_path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("agent_steps"), int) else None


def steps_seen(checkpoint: str | Path | None) -> int | None:
    """Agent steps the drone in ``checkpoint`` has seen: 0 for no checkpoint (fresh weights),
    None when the checkpoint does not say (a file drex-opt did not write)."""
    if checkpoint is None:
        return 0
    lineage = read_lineage(checkpoint)
    return None if lineage is None else lineage["agent_steps"]


def write_lineage(checkpoint: Path, run_agent_steps: int, started_from: str | Path | None) -> dict:
    """Record ``checkpoint``'s total agent steps: its run's plus those of the drone it started from."""
    before = steps_seen(started_from)
    lineage = {
        "agent_steps": None if before is None else before + int(run_agent_steps),
        "run_agent_steps": int(run_agent_steps),
        "started_from": None if started_from is None else str(started_from),
        "started_from_agent_steps": before,
    }
    if lineage["agent_steps"] is None:
        lineage.pop("agent_steps")  # unknown: read_lineage then answers None, not a wrong number
    write_json_atomic(lineage_path(checkpoint), lineage)
    return lineage


def copy(source: str | Path, target: Path) -> None:
    """Copy a checkpoint with its optimiser state and lineage (each file atomically)."""
    source = Path(source)
    for src, dst in ((source, target), (optimizer_path(source), optimizer_path(target)),
                     (lineage_path(source), lineage_path(target))):
        if src.is_file():
            write_atomic(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
        elif src != source:
            dst.unlink(missing_ok=True)  # never leave an older drone's state beside the new one


def of_run(run_dir: Path) -> Path:
    """The checkpoint a run folder holds: its ``model.pt`` (a folder moved or copied keeps
    its own), else the file its summary names.

    Raises:
        UserError: the run has no checkpoint (it failed, or trained elsewhere).
    """
    run_dir = Path(run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    path = folder / CHECKPOINT_NAME
    if not path.is_file():
        try:
            named = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, ValueError, AttributeError):
            named = None
        if isinstance(named, str) and Path(named).is_file():
            path = Path(named)
    if not path.is_file():
        raise UserError(f"run {folder} has no checkpoint: {folder / CHECKPOINT_NAME} does not exist (to train "
                        "from fresh weights, add --from-scratch)")
    return path.resolve()
