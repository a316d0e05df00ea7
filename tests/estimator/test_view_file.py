"""The estimator's view is written beside the store and a new estimator (a restart) opens it instead
of reading the sample's columns again: its estimates equal those of an estimator reading everything
from the sample; a file of another sample (stale stamp), or damaged or truncated, is ignored and
written again; a refresh or a rebuild of the sample replaces it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from tests.estimator.population import load_population
from tests.estimator.test_incremental import CRITERIA, _estimates, _ingest, _same, _store

from milepost.audiences import estimator, view_file, view_writes
from milepost.audiences.estimator import Estimator, NodeEstimate
from milepost.audiences.event_columns import update as update_events
from milepost.audiences.masks import SampleIndex
from milepost.engines.duckdb import DuckDBStore

USERS, TARGET = 6_000, 1_500


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = _store(tmp_path / "store", USERS, 23)
    yield s
    s.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each read of the sample's event and user columns and attribute paths from DuckDB (the
    real reads run)."""
    calls: list[str] = []
    events, users, paths = estimator.load_events, estimator.load_users, estimator.path_values

    def load_events(*a: Any) -> Any:
        calls.append("events")
        return events(*a)

    def load_users(*a: Any) -> Any:
        calls.append("users")
        return users(*a)

    def path_values(*a: Any) -> Any:
        calls.append("paths")
        return paths(*a)

    monkeypatch.setattr(estimator, "load_events", load_events)
    monkeypatch.setattr(estimator, "path_values", path_values)
    monkeypatch.setattr(estimator, "load_users", load_users)
    monkeypatch.setattr(estimator, "REFRESH_WAIT_MS", 60_000)  # each estimate waits for the worker
    return calls


def _run(store: DuckDBStore, criteria: list[dict[str, Any]] = CRITERIA) -> list[dict[int, NodeEstimate]]:
    """A new estimator's estimates; closing it writes its view beside the store."""
    est = Estimator(store.connect(), target=TARGET)
    try:
        return _estimates(est, criteria)
    finally:
        est.close()
        est.con.close()


def _path(store: DuckDBStore) -> Path:
    return store.path.parent / view_file.DIRECTORY / view_file.NAME


def _from_sample(
    store: DuckDBStore, criteria: list[dict[str, Any]] = CRITERIA
) -> list[dict[int, NodeEstimate]]:
    """Estimates with every column read from the sample (no file to open)."""
    _path(store).unlink(missing_ok=True)
    return _run(store, criteria)


def _stored_stamp(store: DuckDBStore) -> tuple[Any, ...]:
    con = store.connect()
    try:
        row = con.execute(
            "SELECT token, threshold, batch_seq, batch_mark, event_id FROM sample.state"
        ).fetchall()
        size = con.execute("SELECT count(*) FROM sample.users").fetchall()[0][0]
    finally:
        con.close()
    return (*row[0], size)


def test_a_restart_opens_the_view_and_estimates_as_reading_the_sample(
    store: DuckDBStore, reads: list[str]
) -> None:
    _run(store)
    assert reads.count("events") == 1 and reads.count("users") == 1  # first use: read from the sample
    assert view_file.stamp_of(_path(store)) == _stored_stamp(store)
    reads.clear()
    opened = _run(store)
    assert reads == []  # everything from the file
    expected = _from_sample(store)
    assert reads.count("events") == 1
    _same(opened, expected)


def test_a_view_behind_the_sample_is_opened_and_caught_up(store: DuckDBStore, reads: list[str]) -> None:
    _run(store)
    con = store.connect()
    sampled = [int(r[0]) for r in con.execute("SELECT mpid FROM sample.users").fetchall()]
    con.close()
    for k in range(3):  # sampled users with new events and attributes, and users new to the store
        _ingest(store, sampled[k * 30 : k * 30 + 30] + list(range(k * 1_000 + 1, k * 1_000 + 101)), 60 + k)
    reads.clear()
    caught_up = _run(store)  # adopts the stored sample, catches it up, carries the opened view over
    assert reads == []
    assert view_file.stamp_of(_path(store)) == _stored_stamp(store)  # closing wrote the new version
    _same(caught_up, _from_sample(store))


def test_a_file_of_another_sample_is_ignored_and_replaced_by_a_rebuild(
    store: DuckDBStore, reads: list[str]
) -> None:
    _run(store)
    before = view_file.stamp_of(_path(store))
    con = store.connect()
    load_population(con, 200, seed=23, first=USERS)  # written without a batch: rebuilt at start
    con.close()
    reads.clear()
    rebuilt = _run(store)
    assert reads.count("events") == 1  # the file's stamp is not the rebuilt sample's
    after = view_file.stamp_of(_path(store))
    assert after is not None and after != before and after == _stored_stamp(store)
    _same(rebuilt, _from_sample(store))


def test_a_stale_stamp_is_not_read(store: DuckDBStore) -> None:
    _run(store)
    stamp = _stored_stamp(store)
    path = _path(store)
    assert view_file.read(path, stamp, stamp[5]) is not None
    for other in [
        (stamp[0], stamp[1], stamp[2] + 1, *stamp[3:]),  # a later batch
        (stamp[0], stamp[1], stamp[2], "another store", *stamp[4:]),
        (*stamp[:5], stamp[5] + 1),
    ]:
        assert view_file.read(path, other, other[5]) is None


@pytest.mark.parametrize("damage", ["empty", "head", "half", "tail", "garbage", "footer"])
def test_a_damaged_file_is_ignored_and_written_again(
    store: DuckDBStore, reads: list[str], damage: str
) -> None:
    _run(store)
    path = _path(store)
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "head": data[:64],
        "half": data[: len(data) // 2],
        "tail": data[:-7],
        "garbage": bytes(len(data)),
        "footer": data[: len(data) - 200] + bytes(200),
    }[damage]
    path.write_bytes(damaged)
    stamp = _stored_stamp(store)
    assert view_file.read(path, stamp, stamp[5]) is None
    reads.clear()
    got = _run(store)
    assert reads.count("events") == 1  # read from the sample instead
    assert view_file.read(path, stamp, stamp[5]) is not None  # and written again
    _same(got, _from_sample(store))


def test_inconsistent_columns_are_not_read(tmp_path: Path, store: DuckDBStore) -> None:
    _run(store)
    stamp = _stored_stamp(store)
    cols = view_file.read(_path(store), stamp, stamp[5])
    assert cols is not None and cols.events is not None and cols.users is not None
    path = tmp_path / "view.arrow"
    view_file.write(path, stamp, cols)
    assert view_file.read(path, stamp, stamp[5]) is not None
    assert view_file.read(path, stamp, stamp[5] - 1) is None  # not the sample's size
    rows, columns, values, docs, fits = view_file.stored(cols.events)
    beyond = rows.copy()
    beyond[0] = stamp[5]  # a user row past the index
    for broken in [
        view_file.restored(beyond, columns, values, docs, fits, stamp[5]),
        view_file.restored(rows, {**columns, "doc_codes": columns["doc_codes"] + len(docs)}, values, docs, fits, stamp[5]),
    ]:  # fmt: skip
        view_file.write(
            path, stamp, view_file.Columns(cols.mpids, cols.instants, cols.users, broken, cols.paths)
        )
        assert view_file.read(path, stamp, stamp[5]) is None
    unsorted = cols.mpids[::-1].copy()
    view_file.write(
        path, stamp, view_file.Columns(unsorted, cols.instants, cols.users, cols.events, cols.paths)
    )
    assert view_file.read(path, stamp, stamp[5]) is None


def test_the_worker_writes_each_new_version_once_the_sample_settles(
    store: DuckDBStore, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view_writes, "PERSIST_EVERY_S", 3_600.0)  # only a settled sample is written
    monkeypatch.setattr(view_writes, "PERSIST_SETTLE_S", 0.0)  # settled: the same at two cycles
    monkeypatch.setattr(Estimator, "_wake_worker", lambda self: None)  # cycles run here, one by one
    est = Estimator(store.connect(), target=TARGET)
    try:
        _estimates(est, CRITERIA[:4])
        est._cycle()  # what the worker does after an estimate read the columns
        first = view_file.stamp_of(_path(store))
        assert first == est.sample.stamp
        sampled = [int(m) for m in est._index.mpids[:40]]
        _ingest(store, sampled, 71)
        est._cycle()  # the sample changed: refreshed, the view carried over, not written yet
        assert est.sample.stamp != first and view_file.stamp_of(_path(store)) == first
        est._cycle()  # unchanged since the last cycle: written
        assert view_file.stamp_of(_path(store)) == est.sample.stamp
        got = _estimates(est, CRITERIA[:4])
    finally:
        est.close()
        est.con.close()
    _same(got, _from_sample(store, CRITERIA[:4]))


def test_a_path_an_estimate_reads_is_written_without_waiting_for_the_view_to_settle(
    store: DuckDBStore, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view_writes, "PERSIST_EVERY_S", 3_600.0)
    monkeypatch.setattr(view_writes, "PERSIST_SETTLE_S", 3_600.0)  # the view never settles here
    monkeypatch.setattr(Estimator, "_wake_worker", lambda self: None)  # cycles run here, one by one
    est = Estimator(store.connect(), target=TARGET)
    try:
        _estimates(est, CRITERIA[3:4])  # event and user columns, no attribute path
        est._cycle()  # the first write of a view read whole
        assert view_file.stamp_of(_path(store)) == est.sample.stamp
        assert view_file.paths_of(_path(store)) == []
        _estimates(est, CRITERIA[:1])  # reads an attribute path of the same sample
        assert est.persist()  # the file lacks it: written now
        assert view_file.paths_of(_path(store)) == sorted(est._view.paths) != []
        assert not est.persist()  # the file holds the whole view
        est._cycle()
        assert not est.persist()
    finally:
        est.close()
        est.con.close()
    reads.clear()
    got = _run(store, CRITERIA[:1])
    assert reads == []  # a restart reads the path from the file
    _same(got, _from_sample(store, CRITERIA[:1]))


def test_a_store_in_memory_writes_no_file() -> None:
    import duckdb

    assert view_file.location(duckdb.connect(":memory:")) is None


def test_opened_columns_carry_to_a_version_where_the_changed_users_have_no_events(
    store: DuckDBStore,
) -> None:
    """The opened arrays are the file's, read-only: carrying them over never writes into them."""
    _run(store)
    stamp = _stored_stamp(store)
    cols = view_file.read(_path(store), stamp, stamp[5])
    assert cols is not None and cols.events is not None and cols.users is not None
    index = SampleIndex(cols.mpids)
    changed = np.array([cols.mpids[0], 12_345], dtype=np.int64)  # a sampled user and another
    con = store.connect()
    try:
        unsampled = np.array([12_345], dtype=np.int64)  # no events in the sample
        updated, appended = update_events(con, cols.events, index, index, unsampled)
        assert len(appended.ts) == 0 and len(updated.ts) == len(cols.events.ts)
        again, _ = update_events(con, cols.events, index, index, changed)
        assert len(again.ts) >= len(cols.events.ts)
    finally:
        con.close()


def test_after_a_rebuild_at_start_the_worker_reads_the_columns_before_an_estimate(
    store: DuckDBStore, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Estimator, "_wake_worker", lambda self: None)  # cycles run here, one by one
    _run(store)
    con = store.connect()
    load_population(con, 200, seed=23, first=USERS)  # written without a batch: rebuilt at start
    con.close()
    est = Estimator(store.connect(), target=TARGET)
    try:
        est.refresh()  # at start: the sample rebuilt, the file of another sample
        reads.clear()
        est._cycle()  # the worker installs the view with its columns and writes it
        assert set(reads) == {"events", "users", "paths"}  # the paths the earlier file held
        assert view_file.stamp_of(_path(store)) == est.sample.stamp
        reads.clear()
        got = _estimates(est, CRITERIA)
        assert reads == []  # no estimate read a column from the sample
    finally:
        est.close()
        est.con.close()
    _same(got, _from_sample(store))


def test_after_the_population_outgrows_the_rate_estimates_use_the_rebuilt_view_read_by_the_worker(
    store: DuckDBStore, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Estimator, "_wake_worker", lambda self: None)  # cycles run here, one by one
    est = Estimator(store.connect(), target=TARGET)
    try:
        _estimates(est, CRITERIA)
        est._cycle()
        threshold = est.sample.threshold
        con = store.connect()
        load_population(con, 4 * USERS, seed=17, first=USERS)
        con.close()
        _ingest(store, list(range(1, 11)), 9)  # a batch: its refresh finds the rate outgrown
        reads.clear()
        est._cycle()  # the worker rebuilds the sample, reads the view's columns and writes them
        assert est.sample.threshold < threshold
        assert set(reads) == {"events", "users", "paths"}
        assert view_file.stamp_of(_path(store)) == est.sample.stamp  # at once: the file was of the old rate
        reads.clear()
        got = _estimates(est, CRITERIA)
        assert reads == []
    finally:
        est.close()
        est.con.close()
    _same(got, _from_sample(store))


def test_the_file_holds_the_events_in_order_of_their_sequence_keys(store: DuckDBStore) -> None:
    _run(store)
    stamp = _stored_stamp(store)
    opened = view_file.read(_path(store), stamp, stamp[5])
    assert opened is not None and opened.events is not None
    events = opened.events
    assert events.sequence_keys is not None and len(events.ts) > 0
    keys = events.sequence_keys[0]
    assert events.keys_sorted and bool((keys[1:] >= keys[:-1]).all())
    # the keys are those of the events as they are in the file (computed again on a copy)
    again = events.since(0).sequence_keys
    assert again is not None and np.array_equal(again[0], keys)


@pytest.mark.parametrize(
    "metadata",
    [
        {b"stamp": b"not json", b"meta": b"{}"},
        {b"stamp": b"[1, 2]", b"meta": b"[not json"},
        {b"stamp": b"{}", b"meta": b"{}"},
        {b"stamp": b"[99]", b"meta": b'{"paths": ["/score"]}'},  # another format
        {},
    ],
)
def test_a_file_whose_header_does_not_read_gives_no_stamp_and_no_paths(
    tmp_path: Path, metadata: dict[bytes, bytes]
) -> None:
    path = tmp_path / "view.arrow"
    table = pa.table({"x": [1]}).replace_schema_metadata(metadata)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert view_file.stamp_of(path) is None
    assert view_file.paths_of(path) == []
