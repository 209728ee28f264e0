"""Central's fixtures: a store on each engine."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from central.store import Store, open_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "sub" / "central.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same store behaviour on each engine: a SQLite file, or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        s = open_store(f"sqlite://{tmp_path / 'sub' / 'central.db'}")
    else:
        s = open_store(request.getfixturevalue("pg_url"))
        s.connect().close()  # the tables (a SQLite file does not exist before its first writer)
    try:
        yield s
    finally:
        s.close()
