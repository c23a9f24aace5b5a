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
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }


def header_markdown(info: dict) -> str:
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items() if val)
    return (f"- date: {info['date']}\n- machine: {info['cpu']}, {info['cores']} cores, {info['platform']}\n"
            f"- python {info['python']}; {v}\n- command: `{info['command']}`\n")
