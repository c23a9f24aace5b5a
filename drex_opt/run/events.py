"""The line protocol between a training child and its parent.

The child writes ordinary log text and, on lines starting with :data:`EVENT_PREFIX`,
one JSON event each (``start``, ``progress``, ``fault``, ``final``, ``error``). Kept apart
from both sides so the parent never imports the child's heavy modules.
"""

from __future__ import annotations

import json
import sys

EVENT_PREFIX = "@drex "


def emit(event: str, **fields) -> None:
    """Write one machine-readable event line on stdout."""
    fields["event"] = event
    sys.stdout.write(EVENT_PREFIX + json.dumps(fields, default=float, allow_nan=True) + "\n")
    sys.stdout.flush()


def parse_event(line: str) -> dict | None:
    """The event of a line starting with :data:`EVENT_PREFIX`; None for anything else."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
