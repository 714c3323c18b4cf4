"""Fixtures shared by unit and integration tests: the task store on each of its two databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safewatch.postgres import TempPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    """One real throwaway PostgreSQL cluster (Debian's binaries) for the session."""
    with TempPostgres(fsync=False) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's task store lives: a fresh SQLite file, or a fresh schema on the PostgreSQL cluster."""
    if request.param == "sqlite":
        return tmp_path / "state" / "alerts.sqlite3"
    server: TempPostgres = request.getfixturevalue("postgres")
    return server.new_schema()
