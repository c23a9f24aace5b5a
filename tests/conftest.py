"""Shared pytest configuration."""

from __future__ import annotations

import shutil

import pytest

from cli_helpers import ROOT


def pytest_configure(config) -> None:
    # "slow" and "postgres" are registered in pyproject.toml.
    config.addinivalue_line("markers", "mariadb: needs the MariaDB/MySQL server at 127.0.0.1:3306")


@pytest.fixture
def pilot(tmp_path):
    """A folder holding an autopilot with the shipped baselines."""
    (tmp_path / "autopilot" / "configs").mkdir(parents=True)
    for name in ("baseline_quick.json", "baseline_full.json"):
        shutil.copy(ROOT / "autopilot" / "configs" / name, tmp_path / "autopilot" / "configs" / name)
    return tmp_path
