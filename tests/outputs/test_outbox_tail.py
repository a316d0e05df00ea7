"""The outbox's changes kept in memory answer as the store does, or not at all: whatever was read,
dropped or skipped, a read the tail answers equals `DeliveryStore.outbox`."""

from __future__ import annotations

import random

import duckdb
import pytest

from milepost.outputs.outbox_tail import OutboxTail, passed
from milepost.outputs.records import Identities
from milepost.outputs.state import DeliveryStore

pytestmark = pytest.mark.unit


def _write(con: duckdb.DuckDBPyConnection, rows: list[tuple[int, int, int, str, int]]) -> None:
    con.execute(
        "INSERT INTO membership_changes (seq, audience_id, mpid, action, changed_at, cause, recorded_at) "
        "SELECT unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::VARCHAR[]), "
        "unnest(?::BIGINT[]), 'full', 0",
        [[r[i] for r in rows] for i in range(5)],
    ).fetchall()


def test_what_the_tail_answers_is_what_the_store_answers(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(11)
    store = DeliveryStore(con)
    tail = OutboxTail(max_kept=300)
    seq = last = 0
    cursors = {a: 0 for a in range(1, 5)}
    answered = fallen_back = 0
    for n in range(300):
        rows = []
        for _ in range(rng.randrange(0, 20)):
            seq += rng.randrange(1, 3)  # other audiences' changes leave gaps
            rows.append((seq, rng.randrange(1, 6), rng.randrange(100), rng.choice(["add", "remove"]), n))
        _write(con, rows)
        chance = rng.random()
        if chance < 0.05 and rows:
            tail.skip(seq)  # too many to keep: not read
        elif chance < 0.1 and rows:
            tail.add(rows[0][0], rows[1:])  # read from further on: kept from there
        else:
            tail.add(last, rows)
        last = seq
        for audience in range(1, 6):
            after = rng.randrange(max(0, seq - 80), seq + 2)
            limit = rng.randrange(1, 30)
            upto = rng.choice([None, rng.randrange(max(0, seq - 40), seq + 2)])
            kept = tail.read(audience, after, limit, upto)
            if kept is None:
                fallen_back += 1
            else:
                answered += 1
                assert kept == store.outbox(audience, after, limit, upto)
        for a in cursors:
            cursors[a] = max(cursors[a], rng.randrange(0, seq + 1))
        if rng.random() < 0.5:
            tail.drop(passed([(a, c) for a, c in cursors.items()] + [(None, 0)]))
    assert answered > 500 and fallen_back > 200


def test_connections_read_their_audience_from_the_tail_once_it_began(con: duckdb.DuckDBPyConnection) -> None:
    store = DeliveryStore(con)
    tail = OutboxTail()
    _write(con, [(1, 7, 10, "add", 1), (2, 8, 11, "add", 1)])
    tail.add(2, [])  # begun after seq 2: those are read from the store
    assert tail.read(7, 0, 10) is None
    rows = [(3, 7, 12, "add", 2), (4, 8, 13, "remove", 2), (5, 7, 10, "remove", 3)]
    _write(con, rows)
    tail.add(2, rows)
    assert tail.read(7, 2, 10) == store.outbox(7, 2, 10) == [(3, 12, "add", 2), (5, 10, "remove", 3)]
    assert tail.read(7, 3, 10, upto=4) == []
    tail.drop({7: 3})  # audience 8 is followed by nobody: dropped
    assert tail.read(7, 2, 10) is None  # its change 3 was dropped
    assert tail.read(7, 3, 10) == [(5, 10, "remove", 3)]
    assert tail.read(8, 2, 10) is None


def test_identities_are_given_only_when_read_after_the_change() -> None:
    tail = OutboxTail(max_users=3)
    tail.add(0, [(1, 7, 10, "add", 1), (2, 7, 11, "add", 1)])
    old, new = Identities({"email": "old@x"}), Identities({"email": "new@x"})
    tail.remember(2, {10: old, 11: new})
    assert tail.identities([(10, 1), (11, 2)]) == {10: old, 11: new}
    assert tail.identities([(10, 3)]) is None  # a later change of user 10: read again
    tail.remember(3, {10: new})
    assert tail.identities([(10, 3), (11, 2)]) == {10: new, 11: new}
    assert tail.identities([(12, 1)]) is None
    tail.remember(4, {12: old, 13: old})  # more than it keeps: forgotten, then these
    assert tail.identities([(10, 3)]) is None
    assert tail.identities([(12, 4), (13, 4)]) == {12: old, 13: old}
    tail.skip(9)
    assert tail.identities([(12, 4)]) is None
