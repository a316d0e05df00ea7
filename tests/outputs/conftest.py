"""Fixtures of the delivery tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from tests.outputs.inprocess import Local, open_local
from tests.outputs.scripted import World, open_world

from milepost.engines.duckdb import DuckDBStore
from milepost.engines.duckdb_membership import MEMBERSHIP_DDL
from milepost.outputs.state import DeliveryStore


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    """An in-process Milepost with one journey (gold users), stepped by hand."""
    yield from open_local(tmp_path)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A runtime with one journey (gold users) and a webhook output; its runner stepped by hand."""
    yield from open_world(tmp_path)


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A store's connection with the membership and delivery tables."""
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    for ddl in MEMBERSHIP_DDL:
        con.execute(ddl).fetchall()
    DeliveryStore.create_tables(con)
    try:
        yield con
    finally:
        con.close()
        store.close()
