"""Data directories for journeys-as-code tests: the demo layout's inputs and the example outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from milepost.catalog import Catalog
from milepost.cli import _initialise
from milepost.config import Config
from milepost.demo import DEMO_OUTPUTS
from milepost.errors import NotFound
from milepost.journeys.backends import LocalBackend
from milepost.journeys.code import Backend
from milepost.runtime import Runtime
from milepost.synthetic import demo_layout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def prepare(data_dir: Path, *, outputs: bool = True) -> Config:
    """Initialise a data directory with the demo workspaces and inputs (and the example outputs)."""
    config = Config.from_env(data_dir)
    _initialise(config)
    with Catalog(config.catalog_url) as catalog:
        for ws_plan in demo_layout():
            try:
                ws = catalog.get_workspace(ws_plan.name)
            except NotFound:
                ws = catalog.create_workspace(ws_plan.name)
            for ip in ws_plan.inputs:
                try:
                    catalog.get_input(ip.name)
                except NotFound:
                    catalog.create_input(ws.id, ip.name, ip.platform)
        if outputs:
            for name, folder in DEMO_OUTPUTS.items():
                catalog.create_output("file", name, {"directory": str(data_dir / "outputs" / folder)})
    return config


@contextmanager
def local(config: Config) -> Iterator[LocalBackend]:
    runtime = Runtime.open(config)
    runtime.start(background=False)
    try:
        yield LocalBackend(runtime)
    finally:
        runtime.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Config:
    return prepare(tmp_path / "data")


@pytest.fixture
def fresh(tmp_path: Path) -> Callable[[str], Config]:
    """More data directories, prepared alike."""
    return lambda name: prepare(tmp_path / name)


BackendUse = Callable[[Config], Backend]
