"""A first calculation run in parts on the evaluator's thread: audiences settle only after its last part."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.estimator.population import T0, load_population

from milepost.cli import _initialise
from milepost.clock import ManualClock
from milepost.config import Config
from milepost.journeys import service
from milepost.runtime import Runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    config = Config.from_env(tmp_path / "data")
    _initialise(config)
    rt = Runtime.open(config, ManualClock(T0))
    load_population(rt.store.connect(), 400, seed=4)
    try:
        yield rt
    finally:
        rt.close()


def test_a_first_calculation_in_parts_settles_after_its_last_part(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, cat = runtime.journeys, runtime.catalog
    svc.deferred = True  # as in the server: the evaluator thread calculates
    svc.settle_part()  # the recovery after start-up runs in one go
    assert not svc.settling
    svc.create(
        {
            "name": "j",
            "inputs": [cat.get_input(1).name],
            "milestones": [{"name": "all", "criteria": {"all": []}}],
        }
    )
    (row,) = svc.journeys()[0].milestones
    out = cat.create_output("file", "o", {"directory": str(runtime.config.data_dir / "out")})
    cat.apply_connection_plan([(row.audience_id, out.id, "active", {}, "keep")], [])
    svc.refresh()
    assert svc.pending == {row.audience_id} and svc.settling
    monkeypatch.setattr(service, "MIN_PART_USERS", 50)
    svc._part_users = 50  # several parts of this small population
    parts = 0
    while svc.settling:
        svc.settle_part()
        parts += 1
        if svc.settling:
            assert row.audience_id in svc.pending  # not settled before the last part
    assert parts > 2
    expected = runtime.audiences.size(row.audience_id)
    assert expected > 0
    check = runtime.audiences.full_calculation()
    assert (check.adds, check.removes) == (0, 0)
    # A re-plan during a calculation in parts starts it again from the first user.
    svc.stale = True
    svc.settle_part()
    svc.refresh()
    assert svc._cursor is None and svc.settling
