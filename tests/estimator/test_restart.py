"""The sample outlives the estimator: a new one (a server restart) adopts the stored sample when its
state matches the store, catching up on batches accepted since, and its estimates equal those of a
sample rebuilt from scratch; a stored sample whose state is missing, stale or not this store's is
rebuilt; a refresh that fails part way leaves the stored sample and its state as they were."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.estimator.population import load_population
from tests.estimator.test_incremental import CRITERIA, _estimates, _ingest, _same, _store

from milepost.audiences import estimator
from milepost.audiences.estimator import Estimator, NodeEstimate
from milepost.audiences.sample import SAMPLE_TABLES, Sample, sampled
from milepost.engines.duckdb import DuckDBStore

USERS, TARGET = 6_000, 1_500


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the sample's rebuilds (the real rebuild runs)."""
    calls: list[int] = []
    real = Sample.rebuild

    def counted(self: Sample) -> None:
        calls.append(1)
        real(self)

    monkeypatch.setattr(Sample, "rebuild", counted)
    monkeypatch.setattr(estimator, "REFRESH_WAIT_MS", 60_000)  # each estimate waits for the worker
    return calls


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = _store(tmp_path / "store", USERS, 17)
    yield s
    s.close()


def _run(
    store: DuckDBStore, criteria: list[dict[str, Any]] = CRITERIA
) -> tuple[list[dict[int, NodeEstimate]], Any]:
    """A new estimator's estimates (its first use adopts or builds the sample), and its sample's MPIDs."""
    est = Estimator(store.connect(), target=TARGET)
    try:
        return _estimates(est, criteria), est._index.mpids.copy()
    finally:
        est.close()
        est.con.close()


def _tables(store: DuckDBStore) -> dict[str, list[str]]:
    con = store.connect()
    try:
        return {
            t: sorted(map(repr, con.execute(f"SELECT * FROM sample.{t}").fetchall())) for t in SAMPLE_TABLES
        }
    finally:
        con.close()


def _sql(store: DuckDBStore, sql: str) -> None:
    con = store.connect()
    try:
        con.execute(sql).fetchall()
    finally:
        con.close()


def _fresh(
    store: DuckDBStore, criteria: list[dict[str, Any]] = CRITERIA
) -> tuple[list[dict[int, NodeEstimate]], Any, dict[str, list[str]]]:
    """Estimates and tables of a sample rebuilt from scratch (its stored state dropped first)."""
    _sql(store, "DELETE FROM sample.state")
    got, mpids = _run(store, criteria)
    return got, mpids, _tables(store)


def test_a_new_estimator_adopts_the_sample_and_estimates_as_a_rebuilt_one(
    store: DuckDBStore, rebuilds: list[int]
) -> None:
    _run(store)
    assert len(rebuilds) == 1  # no state yet: built
    _ingest(store, [m for m in range(-40_000_007, 40_000_000, 100_000)], 3)
    est = Estimator(store.connect(), target=TARGET)
    try:
        _estimates(est, CRITERIA[:2])  # the sample follows the ingest
        # read on the estimates' connection: the sample's own is the worker thread's
        assert est.sample.batch_seq == est.sample.latest_batch(est.con) > 0
    finally:
        est.close()
        est.con.close()
    assert len(rebuilds) == 1  # the second estimator adopted it
    adopted, mpids = _run(store)
    adopted_tables = _tables(store)
    assert len(rebuilds) == 1
    fresh, fresh_mpids, fresh_tables = _fresh(store)
    assert len(rebuilds) == 2
    assert (mpids == fresh_mpids).all()
    assert adopted_tables == fresh_tables
    _same(adopted, fresh)


def test_a_sample_many_batches_behind_catches_up_exactly(store: DuckDBStore, rebuilds: list[int]) -> None:
    _run(store)
    before = _tables(store)
    con = store.connect()
    sampled = [int(r[0]) for r in con.execute("SELECT mpid FROM sample.users").fetchall()]
    con.close()
    for k in range(12):  # 12 requests and more, no estimator running
        _ingest(store, sampled[k * 40 : k * 40 + 40] + list(range(k * 1_000 + 1, k * 1_000 + 151)), 40 + k)
    latest = _run(store)
    assert len(rebuilds) == 1
    adopted_tables = _tables(store)
    assert adopted_tables != before  # the catch-up copied the new rows
    fresh, fresh_mpids, fresh_tables = _fresh(store)
    assert len(rebuilds) == 2
    assert adopted_tables == fresh_tables
    assert (latest[1] == fresh_mpids).all()
    _same(latest[0], fresh)


@pytest.mark.parametrize(
    "stale",
    [
        "DROP TABLE sample.state",
        "DROP TABLE sample.consents",
        "DELETE FROM sample.state",
        "UPDATE sample.state SET token = 'another format'",
        "UPDATE sample.state SET batch_mark = 'another store'",  # a re-created store's batch numbers
        "UPDATE sample.state SET threshold = threshold // 2",
        "INSERT INTO sample.state SELECT * FROM sample.state",
        "ALTER TABLE main.devices ADD COLUMN extra INTEGER",  # the store's format changed
    ],
)
def test_a_stale_or_missing_state_is_rebuilt(store: DuckDBStore, rebuilds: list[int], stale: str) -> None:
    _ingest(store, list(range(1, 401)), 5)
    _run(store, CRITERIA[:3])
    _sql(store, stale)
    got, _ = _run(store, CRITERIA[:3])
    assert len(rebuilds) == 2
    again, _ = _run(store, CRITERIA[:3])  # the rebuild stored a state that matches
    assert len(rebuilds) == 2
    _same(again, got)


def test_rows_written_without_a_batch_are_not_missed(store: DuckDBStore, rebuilds: list[int]) -> None:
    """Users or events that reached the store other than by a batch make the stored sample stale."""
    _run(store, CRITERIA[:3])
    con = store.connect()
    load_population(con, 200, seed=17, first=USERS)  # same rate, 200 more users
    con.close()
    got, mpids = _run(store, CRITERIA[:3])
    assert len(rebuilds) == 2
    fresh, fresh_mpids, _ = _fresh(store, CRITERIA[:3])
    assert (mpids == fresh_mpids).all()
    _same(got, fresh)


def test_a_population_past_the_next_rate_is_rebuilt(store: DuckDBStore, rebuilds: list[int]) -> None:
    _run(store, CRITERIA[:3])
    _ingest(store, list(range(1, 101)), 9)
    con = store.connect()
    load_population(con, 3 * USERS, seed=17, first=USERS)
    threshold = con.execute("SELECT threshold FROM sample.state").fetchall()[0][0]
    con.close()
    est = Estimator(store.connect(), target=TARGET)
    try:
        _estimates(est, CRITERIA[:1])
        assert est.sample.threshold < threshold
    finally:
        est.close()
        est.con.close()
    assert len(rebuilds) == 2


def test_a_refresh_that_fails_part_way_leaves_the_stored_sample_as_it_was(
    store: DuckDBStore, rebuilds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(store, CRITERIA[:3])
    before = _tables(store)
    con = store.connect()
    sampled = [int(r[0]) for r in con.execute("SELECT mpid FROM sample.users").fetchall()]
    con.close()
    _ingest(store, sampled[:50], 21)

    def fail(self: Sample, batch_seq: int, event_id: int, users: int) -> None:
        raise RuntimeError("stopped between the tables and the state")

    sample = Sample(store.connect(), TARGET)
    with monkeypatch.context() as m:
        m.setattr(Sample, "_update_state", fail)
        with pytest.raises(RuntimeError):
            sample.start()  # adopts, then its catch-up fails after writing the tables
    sample.con.close()
    assert _tables(store) == before
    adopted, mpids = _run(store)
    assert len(rebuilds) == 1
    fresh, fresh_mpids, _ = _fresh(store)
    assert (mpids == fresh_mpids).all()
    _same(adopted, fresh)


def test_batches_of_unsampled_users_leave_the_stored_state_behind_and_a_restart_catches_up(
    store: DuckDBStore, rebuilds: list[int]
) -> None:
    """A refresh that changed no sampled user writes nothing; the state it leaves lags the store,
    and a restart's catch-up from there finds the same and estimates as a rebuilt sample."""
    _run(store, CRITERIA[:3])
    con = store.connect()
    stored = con.execute("SELECT batch_seq, event_id FROM sample.state").fetchall()[0]
    threshold = con.execute("SELECT threshold FROM sample.state").fetchall()[0][0]
    unsampled = [
        int(r[0])
        for r in con.execute(
            f"SELECT m FROM range({10 * USERS}, {12 * USERS}) AS t(m) WHERE NOT ({sampled(threshold, column='m')})"
        ).fetchall()
    ][:300]
    con.close()
    est = Estimator(store.connect(), target=TARGET)
    try:
        _estimates(est, CRITERIA[:1])
        version = est.sample.version
        _ingest(store, unsampled, 31)  # new users, none of them sampled
        _estimates(est, CRITERIA[:1])
        # read on the estimates' connection: the sample's own is the worker thread's
        assert est.sample.batch_seq == est.sample.latest_batch(est.con) > stored[0]
        assert est.sample.version == version  # no sampled user changed
    finally:
        est.close()
        est.con.close()
    con = store.connect()
    assert con.execute("SELECT batch_seq, event_id FROM sample.state").fetchall()[0] == stored
    con.close()
    adopted, mpids = _run(store, CRITERIA[:3])
    assert len(rebuilds) == 1
    fresh, fresh_mpids, _ = _fresh(store, CRITERIA[:3])
    assert (mpids == fresh_mpids).all()
    _same(adopted, fresh)
