"""The background refresh of the sample keeps its share of the time bounded: the next one waits
the base interval, or a multiple of how long the last refresh took when that is longer."""

from __future__ import annotations

from pathlib import Path

from tests.estimator.population import load_population

from milepost import runtime
from milepost.audiences.estimator import Estimator
from milepost.engines.duckdb import DuckDBStore


def test_a_fast_refresh_waits_the_base_interval_and_a_slow_one_a_multiple_of_its_duration() -> None:
    assert runtime.refresh_wait(0.0) == runtime.SAMPLE_REFRESH_S
    assert runtime.refresh_wait(0.01) == runtime.SAMPLE_REFRESH_S
    slow = 2 * runtime.SAMPLE_REFRESH_S / runtime.SAMPLE_REFRESH_SPACING
    assert runtime.refresh_wait(slow) == runtime.SAMPLE_REFRESH_SPACING * slow
    assert runtime.refresh_wait(slow) > runtime.SAMPLE_REFRESH_S


def test_a_refresh_cycle_records_how_long_it_took(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    load_population(con, 500, seed=3)
    est = Estimator(con, target=200)
    try:
        assert est.cycle_s == 0.0
        est.refresh()  # builds the sample
        est._cycle()  # installs its first view, reading its columns
        assert est.cycle_s > 0.0
    finally:
        est.close()
        con.close()
        store.close()
