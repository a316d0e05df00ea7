"""Fixtures of the delivery tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.outputs.inprocess import Local, open_local


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    """An in-process Milepost with one journey (gold users), stepped by hand."""
    yield from open_local(tmp_path)
