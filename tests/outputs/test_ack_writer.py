"""Acknowledgements of several connections written in one transaction agree with each written alone,
and workers committing at once through one `AckWriter` all find theirs written."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import duckdb
import pytest

from milepost.outputs import ack_writer
from milepost.outputs import state as st
from milepost.outputs.ack_writer import STATE_FIELDS, Ack, AckWriter, commit_acks
from milepost.outputs.state import DeliveryState, DeliveryStore

pytestmark = pytest.mark.unit


def _tables(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    states = con.execute("SELECT * FROM delivery_state ORDER BY connection_id").fetchall()
    delivered = con.execute("SELECT * FROM delivered_now ORDER BY connection_id, mpid").fetchall()
    return states, delivered


def _clear(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM delivery_state").fetchall()
    con.execute("DELETE FROM delivered").fetchall()
    con.execute("DELETE FROM delivered_removed").fetchall()


def test_the_state_row_is_the_state_fields_in_order() -> None:
    assert tuple(f.name for f in fields(DeliveryState)) == STATE_FIELDS


def test_a_group_writes_what_each_connection_alone_writes(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(7)
    states = {c: DeliveryState(c, phase=st.STREAM, epoch=1) for c in range(1, 6)}
    rounds: list[list[Ack]] = []
    for n in range(30):
        group = []
        for c in rng.sample(sorted(states), rng.randrange(1, 6)):
            s = states[c]
            s.cursor_seq, s.sent, s.last_error = n, s.sent + 1, rng.choice([None, f"e{n}"])
            adds = sorted(rng.sample(range(40), rng.randrange(4)))  # some the partner has: replaced
            removes = sorted(set(rng.sample(range(40), rng.randrange(4))) - set(adds))
            group.append(Ack(s.row(), removes, adds, [rng.choice([None, f"ids-{n}"]) for _ in adds]))
        rounds.append(group)
    for group in rounds:
        commit_acks(con, group)
    together = _tables(con)
    _clear(con)
    for group in rounds:
        for ack in group:
            commit_acks(con, [ack])
    assert _tables(con) == together
    assert {r[0] for r in together[0]} == {c for group in rounds for a in group for c in [a.state[0]]}


def test_workers_committing_at_once_each_find_theirs_written(con: duckdb.DuckDBPyConnection) -> None:
    writer = AckWriter()
    stores = {c: DeliveryStore(con.cursor(), writer) for c in range(1, 9)}
    start = threading.Barrier(len(stores))

    def work(c: int) -> None:
        store, s = stores[c], DeliveryState(c, phase=st.STREAM)
        start.wait()
        for n in range(25):
            s.cursor_seq, s.sent = n, n
            store.commit(s, added={c * 1000 + n: None}, removed=[c * 1000 + n - 2], now_ms=n)
            assert store.delivered_among(c, [c * 1000 + n]) == {c * 1000 + n}

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(work, stores))  # re-raises a worker's failure
    states, delivered = _tables(con)
    assert [(r[0], r[3], r[5]) for r in states] == [(c, 24, 24) for c in stores]
    assert [(c, m) for c, m, _ in delivered] == [(c, c * 1000 + n) for c in stores for n in (23, 24)]
    for store in stores.values():
        store.close()


def test_a_failed_group_fails_every_worker_in_it(con: duckdb.DuckDBPyConnection) -> None:
    writer = AckWriter()
    bad = Ack(DeliveryState(1).row(), [], [5], [None])
    bad.state[1] = None  # phase is NOT NULL: the group's transaction fails
    with pytest.raises(duckdb.ConstraintException):
        writer.write(con, bad)
    writer.write(con, Ack(DeliveryState(2).row(), [], [6], [None]))  # the writer goes on
    assert _tables(con)[1] == [(2, 6, None)]


def test_a_groups_removes_delete_exactly_their_connections_users(con: duckdb.DuckDBPyConnection) -> None:
    """The same MPIDs delivered by other connections (in the group or not) stay delivered."""
    commit_acks(
        con,
        [
            Ack(DeliveryState(c, phase=st.STREAM).row(), [], list(range(1, 11)), [None] * 10)
            for c in (1, 2, 3)
        ],
    )
    commit_acks(
        con,
        [
            Ack(DeliveryState(1, phase=st.STREAM, cursor_seq=5).row(), [3, 7], [], []),
            Ack(DeliveryState(2, phase=st.STREAM, cursor_seq=6).row(), [5], [], []),
        ],
    )
    left = con.execute("SELECT connection_id, mpid FROM delivered_now ORDER BY ALL").fetchall()
    gone = {(1, 3), (1, 7), (2, 5)}
    assert left == sorted((c, m) for c in (1, 2, 3) for m in range(1, 11) if (c, m) not in gone)


def _groups_of_workers_apart(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch, act: Callable[[DeliveryStore, int], None]
) -> list[int]:
    """Five connections' workers each `act` through one `AckWriter`, arriving one after another a
    little apart; the sizes of the groups written."""
    groups: list[int] = []
    real = ack_writer.commit_acks

    def counting(c: duckdb.DuckDBPyConnection, acks: list[Ack]) -> None:
        groups.append(len(acks))
        real(c, acks)

    monkeypatch.setattr(ack_writer, "commit_acks", counting)
    writer = AckWriter(gather_step_s=0.3, gather_max_s=2.0)
    stores = {c: DeliveryStore(con.cursor(), writer) for c in range(1, 6)}

    def work(c: int) -> None:
        time.sleep(0.02 * c)
        act(stores[c], c)

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(work, stores))
    for store in stores.values():
        store.close()
    return groups


def test_acknowledgements_arriving_apart_are_gathered_into_one_group(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker waits while others keep arriving, so one transaction writes them all."""

    def acknowledge(store: DeliveryStore, c: int) -> None:
        store.commit(DeliveryState(c, phase=st.STREAM, cursor_seq=c), added={c: None}, now_ms=c)

    assert _groups_of_workers_apart(con, monkeypatch, acknowledge) == [5]
    states, delivered = _tables(con)
    assert [(r[0], r[3]) for r in states] == [(c, c) for c in range(1, 6)]
    assert [(c, m) for c, m, _ in delivered] == [(c, c) for c in range(1, 6)]


def test_saves_of_workers_at_once_are_written_as_one_group(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state saved with nothing acknowledged (a batch marked as in flight) goes with the other
    connections' writes too, rather than as a transaction of its own per connection."""

    def mark_inflight(store: DeliveryStore, c: int) -> None:
        store.save(DeliveryState(c, phase=st.STREAM, cursor_seq=c, inflight_to=c * 10))

    assert _groups_of_workers_apart(con, monkeypatch, mark_inflight) == [5]
    states, delivered = _tables(con)
    assert [(r[0], r[3], r[-1]) for r in states] == [(c, c, c * 10) for c in range(1, 6)]
    assert delivered == []


def test_a_lone_connections_writes_do_not_wait_for_company(con: duckdb.DuckDBPyConnection) -> None:
    """After a group of one, the next lone acknowledgement is written at once: a connection
    streaming a backlog on its own pays no gather window per batch. The first write, with no group
    before it, still waits a window, as a burst after a group of several does."""
    writer = AckWriter(gather_step_s=0.05, gather_max_s=0.1)
    timed: list[float] = []

    class Counting(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            if timeout is not None:
                timed.append(timeout)
            return super().wait(timeout)

    writer._cond = Counting()
    store = DeliveryStore(con.cursor(), writer)
    for n in range(1, 5):
        store.commit(DeliveryState(1, phase=st.STREAM, cursor_seq=n), added={n: None}, now_ms=n)
    store.close()
    assert len(timed) == 1  # the first write's window only
    states, delivered = _tables(con)
    assert [(r[0], r[3]) for r in states] == [(1, 4)]
    assert [(c, m) for c, m, _ in delivered] == [(1, m) for m in range(1, 5)]


@pytest.mark.parametrize("apply_at", [1, 7, 10**9])
def test_removes_waiting_or_applied_leave_the_partner_with_what_it_was_sent(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch, apply_at: int
) -> None:
    """Removes are recorded apart and applied in bulk once `APPLY_REMOVED_AT` wait: after every
    group, what the partner has (`delivered_now`) is what it was sent, users removed and added again
    included, and an applied bulk leaves no row behind."""
    monkeypatch.setattr(ack_writer, "APPLY_REMOVED_AT", apply_at)
    rng = random.Random(apply_at)
    has: dict[tuple[int, int], str | None] = {}
    for n in range(40):
        group = []
        for c in rng.sample(range(1, 5), rng.randrange(1, 5)):
            adds = sorted(rng.sample(range(30), rng.randrange(6)))
            removes = sorted(set(rng.sample(range(30), rng.randrange(6))) - set(adds))
            forms = [rng.choice([None, f"ids-{n}"]) for _ in adds]
            group.append(Ack(DeliveryState(c, phase=st.STREAM, cursor_seq=n).row(), removes, adds, forms))
            for m in removes:
                has.pop((c, m), None)
            has.update({(c, m): f for m, f in zip(adds, forms, strict=True)})
        commit_acks(con, group)
        _, delivered = _tables(con)
        assert {(c, m): f for c, m, f in delivered} == has
    waiting = set(con.execute("SELECT connection_id, mpid FROM delivered_removed").fetchall())
    rows = con.execute("SELECT connection_id, mpid FROM delivered").fetchall()
    assert len(rows) == len(set(rows))
    behind = set(rows) - set(has)  # rows of users removed whose remove is not applied yet
    assert behind <= waiting
    if apply_at == 1:  # applied after every group with removes: nothing left behind
        assert not waiting and not behind
    elif apply_at == 10**9:  # never applied: every remove waits, its row still there
        assert behind
    else:
        assert len(waiting) < apply_at
