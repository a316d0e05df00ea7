"""Fixtures of the audience engine tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.audiences.test_engine import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A store, catalog and engine in a temporary directory."""
    w = World(tmp_path)
    yield w
    w.engine.con.close()
    w.store.close()
