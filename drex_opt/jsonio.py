"""JSON files read strictly and written atomically."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable

from drex_opt.errors import UserError


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file; NaN/Infinity literals are refused.

    Raises:
        UserError: missing, unreadable, empty or malformed file (one-line message).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise UserError(f"{what} is a directory, not a JSON file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {p}: {exc}") from None
    if not text.strip():
        raise UserError(f"{what} is empty: {p}")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise UserError(f"{what} is not valid JSON: {p}: {exc}") from None


def read_json_object(path: str | Path, what: str = "file") -> dict:
    """Like :func:`read_json` but the top level must be an object."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise UserError(f"{what} must hold a JSON object at the top level, not {type(data).__name__}: {path}")
    return data


def finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (non-finite floats become null)."""
    return json.dumps(finite(obj), indent=indent, sort_keys=False)


def write_atomic(path: str | Path, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``path`` through a temporary file beside it, then rename it into place.

    Args:
        path: the file to (re)place; its folder is created.
        content: text (UTF-8), bytes, or a function that writes the temporary file it is
            given (e.g. a plot's ``savefig``).

    A crash or a kill mid-write leaves the previous file (or none), never half a file.
    The file gets the usual permissions (0666 less the umask), like any file write;
    ``tempfile.mkstemp`` would make it 0600 and unreadable to the owner's other tools.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if callable(content):
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON with :func:`write_atomic`."""
    return write_atomic(path, dumps(obj) + "\n")
