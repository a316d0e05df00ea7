"""Shared fixtures: a real server process per test module that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import Server, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict]]:
    """A `milepost serve` process on a fresh data directory, and the credentials of `init --json`."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    with running_server(data_dir) as pair:
        yield pair
