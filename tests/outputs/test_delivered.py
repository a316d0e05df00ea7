"""What the partner has, answered from memory for streamed batches: always the answer `delivered`
gives, after adds, removes, re-adds (identity changes), synchronisation batches, failed commits,
a forgotten connection, and a store opened again (a restart after a crash)."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from milepost.engines.duckdb import DuckDBStore
from milepost.outputs import delivered as dl
from milepost.outputs import state as st
from milepost.outputs.delivered import DeliveredSet
from milepost.outputs.state import DeadLetter, DeliveryState, DeliveryStore

pytestmark = pytest.mark.unit

NAMES = ("Gold", "gold-ext")


@pytest.mark.parametrize("merge_at", [3, 1_000_000])
def test_the_set_follows_adds_and_removes(monkeypatch: pytest.MonkeyPatch, merge_at: int) -> None:
    monkeypatch.setattr(dl, "MERGE_AT", merge_at)
    rng = random.Random(merge_at)
    universe = [*range(-40, 40), -(2**63), 2**63 - 1]
    model = set(rng.sample(universe, 30))
    has = DeliveredSet(sorted(model, key=lambda _: rng.random()))
    for _ in range(300):
        added = set(rng.sample(universe, rng.randrange(4)))
        removed = set(rng.sample(universe, rng.randrange(4))) - added
        has.apply(added, removed)
        model = (model - removed) | added
        asked = rng.sample(universe, rng.randrange(1, 20))
        assert has.among(asked) == model & set(asked)
    assert len(has) == len(model)
    assert DeliveredSet([]).among([1, 2]) == set()


def _from_table(store: DeliveryStore, connection_id: int, asked: list[int]) -> set[int]:
    """Which of `asked` the partner has, read from the store itself (`delivered_now`)."""
    rows = store.con.execute(
        "SELECT mpid FROM delivered_now WHERE connection_id = ? AND mpid IN (SELECT unnest(?::BIGINT[]))",
        [connection_id, sorted(set(asked))],
    ).fetchall()
    return {int(r[0]) for r in rows}


def _agree(store: DeliveryStore, connection_id: int, asked: list[int]) -> set[int]:
    memory = store.delivered_among(connection_id, asked)
    assert memory == _from_table(store, connection_id, asked)
    return memory


def test_streamed_commits_keep_the_answer_of_the_table(con: duckdb.DuckDBPyConnection) -> None:
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM)
    store.commit(s, added={1: "a", 2: "b", 3: None}, now_ms=1)
    store.commit(DeliveryState(5, phase=st.STREAM), added={9: None}, now_ms=1)
    assert _agree(store, 4, [1, 2, 3, 9]) == {1, 2, 3}  # read once, from here kept in memory
    rng = random.Random(3)
    for n in range(200):
        added = {m: f"ids-{n}" for m in rng.sample(range(60), rng.randrange(5))}  # some re-adds
        removed = rng.sample(range(60), rng.randrange(5))
        s.cursor_seq = n
        store.commit(s, added=added, removed=removed, now_ms=n)
        _agree(store, 4, rng.sample(range(60), 10))
    assert _agree(store, 5, [9, 1]) == {9}
    _agree(store, 4, list(range(60)))


def test_a_failed_commit_is_read_again(con: duckdb.DuckDBPyConnection) -> None:
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM)
    store.commit(s, added={1: None}, now_ms=1)
    assert _agree(store, 4, [1, 2]) == {1}
    unwritable = DeadLetter({"not json": object()}, 400, "no")
    with pytest.raises(TypeError):
        store.commit(s, added={2: None}, removed=[1], dead=[unwritable], now_ms=2)
    assert _agree(store, 4, [1, 2]) == {1}  # rolled back, and so is what memory holds


def test_synchronisation_batches_and_forgetting_are_followed(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("INSERT INTO memberships SELECT 7, unnest([1, 2, 3]), 100").fetchall()
    con.execute(
        "INSERT INTO identities SELECT 'email', 'e' || m, m, 'e' || m, false, 0 FROM unnest([1, 2, 3]) t(m)"
    ).fetchall()
    store = DeliveryStore(con)
    store.commit(DeliveryState(4), added={2: "stale", 8: None}, now_ms=1)
    assert _agree(store, 4, [1, 2, 3, 8]) == {2, 8}
    store.queue_sync(4, 7, 1)
    batch = store.sync.read_json(4, 7, 1, None, 10, None, NAMES)
    assert batch is not None
    s = DeliveryState(4, phase=st.SYNC_ADD, epoch=1, sync_after=batch.last, sent=3)
    store.commit(s, synced=batch, now_ms=2)
    assert _agree(store, 4, [1, 2, 3, 8]) == {1, 2, 3, 8}
    store.forget(4)
    assert _agree(store, 4, [1, 2, 3, 8]) == set()


def test_a_store_opened_again_reads_what_was_committed(tmp_path: Path) -> None:
    engine = DuckDBStore(tmp_path / "store")
    con = engine.connect()
    DeliveryStore.create_tables(con)
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM)
    store.commit(s, added={1: None, 2: None}, now_ms=1)
    assert store.delivered_among(4, [1, 2, 3]) == {1, 2}
    store.commit(s, added={3: None}, removed=[1], now_ms=2)
    con.close()
    engine.close()  # as a crash leaves it: only what committed is in the store
    engine = DuckDBStore(tmp_path / "store")
    con = engine.connect()
    try:
        again = DeliveryStore(con)
        assert again.delivered_among(4, [1, 2, 3]) == {2, 3} == _from_table(again, 4, [1, 2, 3])
    finally:
        con.close()
        engine.close()
