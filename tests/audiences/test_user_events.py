"""Events held by user: a user's rows are exactly theirs, however the events arrived."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milepost.audiences.user_events import EventsByUser, UserEvents, UserEventsSettings

ROWS = st.lists(st.tuples(st.integers(1, 12), st.integers(0, 10**6)), max_size=40)


def table(rows: list[tuple[int, int]]) -> pa.Table:
    return pa.table(
        {"mpid": pa.array([r[0] for r in rows], pa.int64()), "ts": pa.array([r[1] for r in rows], pa.int64())}
    )


def pairs(t: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(t.column("mpid").to_pylist(), t.column("ts").to_pylist(), strict=True))


@settings(max_examples=200, deadline=None)
@given(ROWS, st.lists(ROWS, max_size=8), st.lists(st.integers(0, 14), max_size=8))
def test_take_finds_every_row_of_the_users_and_no_other(
    first: list[tuple[int, int]], later: list[list[tuple[int, int]]], users: list[int]
) -> None:
    held = EventsByUser("mpid, ts", table(first), through=1)
    for i, rows in enumerate(later):
        held.absorb(table(rows), through=2 + i)
    everything = first + [r for rows in later for r in rows]
    assert held.rows == len(everything)
    want = sorted(r for r in everything if r[0] in set(users))
    assert pairs(held.take(users)) == want
    # Size-tiered: each run less than half the one before it, so few runs.
    sizes = held.runs
    assert all(a > 2 * b for a, b in itertools.pairwise(sizes)), sizes


def test_runs_are_merged_so_that_each_is_less_than_half_the_one_before() -> None:
    held = EventsByUser("mpid, ts", table([(5, i) for i in range(64)]), through=1)
    for i in range(16):
        held.absorb(table([(i % 5, 1000 + i), (i % 3, 2000 + i)]), through=2 + i)
    sizes = held.runs
    assert all(a > 2 * b for a, b in itertools.pairwise(sizes)), sizes
    assert len(sizes) < 6
    assert pairs(held.take([5])) == [(5, i) for i in range(64)]


def test_a_user_s_older_rows_come_first_after_a_merge() -> None:
    held = EventsByUser("mpid, ts", table([(1, 10), (2, 20)]), through=1)
    held.absorb(table([(1, 5), (2, 1)]), through=2)
    assert held.runs == [4]
    assert held.take([1, 2]).column("ts").to_pylist() == [10, 5, 20, 1]


def test_events_must_come_after_those_held() -> None:
    held = EventsByUser("mpid, ts", table([(1, 10)]), through=5)
    with pytest.raises(ValueError, match="not after 5"):
        held.absorb(table([(1, 11)]), through=5)
    assert held.rows == 1


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("CREATE TABLE events (event_id BIGINT, mpid BIGINT, ts BIGINT)")
    con.execute("INSERT INTO events SELECT i, i % 7, 1000 * i FROM range(1, 301) t(i)")
    yield con
    con.close()


def run_on(con: duckdb.DuckDBPyConnection) -> Callable[[str], list[Any]]:
    return lambda sql: con.execute(sql).fetchall()


def held_eventually(events: UserEvents, columns: str, run: Callable[[str], list[Any]]) -> EventsByUser:
    for _ in range(500):  # the read runs in a thread of its own
        held = events.get(columns, run)
        if held is not None:
            return held
        time.sleep(0.01)
    raise AssertionError("the events were never held")


def test_events_are_read_beside_the_evaluations_and_the_newest_taken_in(
    con: duckdb.DuckDBPyConnection,
) -> None:
    events = UserEvents(
        con, "memory.main.events", UserEventsSettings(min_events=1, tail_rows=50, check_every=1)
    )
    run = run_on(con)
    assert events.get("mpid, ts", run) is None  # the first evaluation scans
    held = held_eventually(events, "mpid, ts", run)
    assert (held.through, held.rows) == (300, 300)
    con.execute("INSERT INTO events SELECT i, 3, 1000 * i FROM range(301, 341) t(i)")
    assert events.get("mpid, ts", run) is held and held.through == 300  # 40 newest: read from the store
    con.execute("INSERT INTO events SELECT i, 3, 1000 * i FROM range(341, 361) t(i)")
    assert events.get("mpid, ts", run) is held and held.through == 360
    assert held.take([3]).column("ts").to_pylist() == sorted(
        r[0] for r in con.execute("SELECT ts FROM events WHERE mpid = 3").fetchall()
    )
    # Other columns: read again, and scanned meanwhile.
    assert events.get("mpid, event_id", run) is None
    assert held_eventually(events, "mpid, event_id", run).rows == 360


def test_a_small_store_is_scanned(con: duckdb.DuckDBPyConnection) -> None:
    events = UserEvents(
        con, "memory.main.events", UserEventsSettings(min_events=301, check_every=1, wait=True)
    )
    assert events.get("mpid, ts", run_on(con)) is None
    con.execute("INSERT INTO events VALUES (301, 1, 0)")
    assert events.get("mpid, ts", run_on(con)) is not None


def test_a_failed_read_leaves_evaluations_scanning(
    con: duckdb.DuckDBPyConnection, caplog: pytest.LogCaptureFixture
) -> None:
    events = UserEvents(con, "memory.main.events", UserEventsSettings(min_events=0, check_every=1, wait=True))
    assert events.get("mpid, no_such_column", run_on(con)) is None
    assert "could not hold the events by user" in caplog.text
    assert events.get("mpid, ts", run_on(con)) is not None  # another try succeeds


def test_whole_rows_are_not_held(con: duckdb.DuckDBPyConnection) -> None:
    events = UserEvents(con, "memory.main.events", UserEventsSettings(min_events=0, check_every=1, wait=True))
    assert events.get("*", run_on(con)) is None
    assert events.get("mpid", run_on(con)) is not None


@settings(max_examples=100, deadline=None)
@given(ROWS, st.lists(ROWS, max_size=8), st.integers(1, 30), st.lists(st.integers(0, 14), max_size=8))
def test_no_merge_grows_a_run_past_its_limit(
    first: list[tuple[int, int]], later: list[list[tuple[int, int]]], limit: int, users: list[int]
) -> None:
    held = EventsByUser("mpid, ts", table(first), through=1)
    added = [len(first)]
    for i, rows in enumerate(later):
        held.absorb(table(rows), through=2 + i, merge_rows=limit)
        if rows:
            added.append(len(rows))
    # A run is one table as added, or merged ones within the limit.
    assert all(n <= limit or n in added for n in held.runs), (held.runs, added)
    everything = first + [r for rows in later for r in rows]
    assert pairs(held.take(users)) == sorted(r for r in everything if r[0] in set(users))


def test_runs_past_the_most_are_read_again_as_one(con: duckdb.DuckDBPyConnection) -> None:
    limits = UserEventsSettings(min_events=0, tail_rows=1, check_every=1, merge_rows=1, max_runs=3, wait=True)
    events = UserEvents(con, "memory.main.events", limits)
    run = run_on(con)
    first = events.get("mpid, ts", run)
    assert first is not None and first.runs == [300]
    for i in range(301, 304):  # one newest event per evaluation: a run each, none merged
        con.execute(f"INSERT INTO events VALUES ({i}, 2, {i})")
        assert events.get("mpid, ts", run) is first
    assert first.runs == [300, 1, 1, 1]  # more than three: read again, for the next evaluation
    again = events.get("mpid, ts", run)
    assert again is not first and again is not None
    assert (again.runs, again.through) == ([303], 303)
