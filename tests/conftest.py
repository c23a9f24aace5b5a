"""Shared pytest configuration."""

from __future__ import annotations


def pytest_configure(config) -> None:
    # "slow" and "postgres" are registered in pyproject.toml.
    config.addinivalue_line("markers", "mariadb: needs the MariaDB/MySQL server at 127.0.0.1:3306")
