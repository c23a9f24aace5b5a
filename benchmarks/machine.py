"""Machine, versions and command line recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_line() -> list[str]:
    """This process's command line as it was typed: ``python -m benchmarks.<name> ...`` for a benchmark."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = spec.name.removesuffix(".__main__") if spec is not None and spec.name else None
    return [os.path.basename(sys.executable), *(["-m", name] if name else sys.argv[:1]), *sys.argv[1:]]


def describe() -> dict:
    versions = {}
    for pkg in ("drex-opt", "pufferlib", "torch", "numpy", "optuna"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "command": " ".join(command_line()),
    }


def header_markdown(info: dict) -> str:
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items() if val)
    return (f"- date: {info['date']}\n- machine: {info['cpu']}, {info['cores']} cores, {info['platform']}\n"
            f"- python {info['python']}; {v}\n- command: `{info['command']}`\n")
