"""Data files shipped with drex-opt: the search spaces and the baseline configurations.

The repository's ``search_spaces/`` and ``autopilot/configs/`` are the one source. A
regular install copies them into the package (``pyproject.toml`` maps them to
``drex_opt/_search_spaces`` and ``drex_opt/_baselines``); an editable install or a
checkout reads them where they are.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _located(installed: str, in_repository: str) -> Path:
    copy = _PACKAGE / installed
    return copy if copy.is_dir() else _PACKAGE.parent / in_repository


def search_spaces_dir() -> Path:
    """The folder of the shipped ``<focus>.toml`` files."""
    return _located("_search_spaces", "search_spaces")


def baselines_dir() -> Path:
    """The folder of the shipped ``baseline_quick.json`` and ``baseline_full.json``."""
    return _located("_baselines", "autopilot/configs")
