"""Fixtures giving each catalog test a fresh database, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from milepost.catalog import Catalog
from milepost.clock import ManualClock
from support.postgres import fresh_database, running_postgres

START_MS = 1_700_000_000_000
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the whole session."""
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    server: str = request.getfixturevalue("postgres_url")
    return fresh_database(server, f"catalog_{next(_database_numbers)}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_MS)


@pytest.fixture
def catalog(catalog_url: str, clock: ManualClock) -> Iterator[Catalog]:
    opened = Catalog(catalog_url, clock=clock)
    try:
        yield opened
    finally:
        opened.close()
