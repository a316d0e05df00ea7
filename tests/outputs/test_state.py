"""The delivery store: a connection's state row written once then updated, and what the partner has
recorded whether its users are new to `delivered` or already there (an identity change re-adds one)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from milepost.outputs import state as st
from milepost.outputs.state import DeliveryState, DeliveryStore
from milepost.outputs.sync_queue import SyncQueue
from milepost.outputs.worker import MIN_MPID

pytestmark = pytest.mark.unit

NAMES = ("Gold", "gold-ext")


def _delivered(con: duckdb.DuckDBPyConnection, connection_id: int) -> dict[int, str | None]:
    rows = con.execute(
        "SELECT mpid, identities FROM delivered_now WHERE connection_id = ? ORDER BY mpid", [connection_id]
    ).fetchall()
    return {int(m): i for m, i in rows}


def test_a_state_is_inserted_once_then_updated(con: duckdb.DuckDBPyConnection) -> None:
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM, epoch=2, cursor_seq=10, inflight_to=12)
    store.save(s)
    assert store.load(4) == s
    s.cursor_seq, s.inflight_to, s.last_error, s.sent = 12, None, "boom", 3
    store.save(s)
    store.commit(DeliveryState(5, phase=st.SYNC_ADD, sync_after=7), now_ms=1)
    s.sent = 9
    store.commit(s, added={1: "[{},[]]"}, now_ms=2)
    assert store.load(4) == s
    assert store.load(5) == DeliveryState(5, phase=st.SYNC_ADD, sync_after=7)
    counts = con.execute(
        "SELECT connection_id, count(*) FROM delivery_state GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert counts == [(4, 1), (5, 1)]


def test_adds_of_users_the_partner_has_replace_what_it_was_given(con: duckdb.DuckDBPyConnection) -> None:
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM)
    store.commit(s, added={1: "old-1", 2: "old-2"}, now_ms=1)
    s.cursor_seq, s.sent = 5, 3
    store.commit(s, added={2: "new-2", 3: "new-3"}, removed=[1], now_ms=2)
    assert _delivered(con, 4) == {2: "new-2", 3: "new-3"}
    assert store.load(4).cursor_seq == 5


def test_a_synchronisation_batch_is_recorded_over_users_already_recorded(
    con: duckdb.DuckDBPyConnection,
) -> None:
    con.execute("INSERT INTO memberships SELECT 7, unnest([1, 2, 3]), 100").fetchall()
    con.execute(
        "INSERT INTO identities SELECT 'email', 'e' || m, m, 'e' || m, false, 0 FROM unnest([1, 2, 3]) t(m)"
    ).fetchall()
    store = DeliveryStore(con)
    store.queue_sync(4, 7, 1)
    batch = store.sync.read_json(4, 7, 1, None, 10, None, NAMES)
    assert batch is not None and batch.eligible == 3
    # Recorded meanwhile (the queue was taken before): a plain insert of the batch fails on it.
    store.commit(DeliveryState(4), added={2: "stale"}, now_ms=1)
    con.execute("BEGIN TRANSACTION").fetchall()
    with pytest.raises(duckdb.ConstraintException):
        store.sync.deliver(4, batch, replace=False)
    con.execute("ROLLBACK").fetchall()
    s = DeliveryState(4, phase=st.SYNC_ADD, epoch=1, sync_after=batch.last, sent=3)
    store.commit(s, synced=batch, now_ms=2)
    given = '[{"email":"e%d"},[]]'
    assert _delivered(con, 4) == {m: given % m for m in (1, 2, 3)}
    assert store.load(4) == s


def test_a_synchronisation_batch_adds_again_users_whose_remove_waits(con: duckdb.DuckDBPyConnection) -> None:
    """A remove not yet applied to `delivered` leaves the user's row there: a synchronisation that
    sends the user again replaces the row and drops the remove, however the batch is recorded."""
    con.execute("INSERT INTO memberships SELECT 7, unnest([1, 2, 3]), 100").fetchall()
    con.execute(
        "INSERT INTO identities SELECT 'email', 'e' || m, m, 'e' || m, false, 0 FROM unnest([1, 2, 3]) t(m)"
    ).fetchall()
    store = DeliveryStore(con)
    store.commit(DeliveryState(4), added={1: "old-1", 2: "old-2"}, now_ms=1)
    store.commit(DeliveryState(4), removed=[2], now_ms=2)
    assert _delivered(con, 4) == {1: "old-1"}
    store.queue_sync(4, 7, 1)
    queued = con.execute("SELECT mpid FROM sync_queue WHERE connection_id = 4 ORDER BY mpid").fetchall()
    assert queued == [(2,), (3,)]  # what the partner does not have, the waiting remove's user included
    given = '[{"email":"e%d"},[]]'
    for staged in (True, False):
        batch = store.sync.read_json(4, 7, 1, None, 10, None, NAMES)
        assert batch is not None and batch.eligible == 2
        con.execute("BEGIN TRANSACTION").fetchall()
        (SyncQueue(con) if not staged else store.sync).deliver(4, batch, replace=True)
        assert _delivered(con, 4) == {1: "old-1", 2: given % 2, 3: given % 3}
        assert con.execute("SELECT count(*) FROM delivered_removed").fetchall() == [(0,)]
        con.execute("ROLLBACK").fetchall()
    s = DeliveryState(4, phase=st.SYNC_ADD, epoch=1, sync_after=batch.last, sent=2)
    store.commit(s, synced=batch, now_ms=3)  # a plain insert first: it fails on user 2's row
    assert _delivered(con, 4) == {1: "old-1", 2: given % 2, 3: given % 3}


def test_a_remove_recorded_for_a_user_the_partner_lacks_does_not_hide_a_later_add(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """A streamed remove the partner did not need (it never had the user, or the user is not
    eligible) is recorded all the same. When a synchronisation then gives the partner the user,
    through a plain insert, the partner has it."""
    con.execute("INSERT INTO memberships VALUES (7, 3, 100)").fetchall()
    con.execute("INSERT INTO identities VALUES ('email', 'e3', 3, 'e3', false, 0)").fetchall()
    store = DeliveryStore(con)
    store.commit(DeliveryState(4), removed=[3], now_ms=1)
    assert _delivered(con, 4) == {}
    store.queue_sync(4, 7, 1)
    batch = store.sync.read_json(4, 7, 1, None, 10, None, NAMES)
    assert batch is not None and batch.eligible == 1
    s = DeliveryState(4, phase=st.SYNC_ADD, epoch=1, sync_after=batch.last, sent=1)
    store.commit(s, synced=batch, now_ms=2)  # the plain insert succeeds: there was no row
    assert _delivered(con, 4) == {3: '[{"email":"e3"},[]]'}
    assert con.execute("SELECT count(*) FROM delivered_removed").fetchall() == [(0,)]


# The scan as one statement (what `identities_touched` + `identity_candidates` replace): the users
# the partner has or that are members, whose identities were written in the window, in order.
_JOINED_SCAN = (
    "WITH touched AS (SELECT mpid, max(updated_at) AS u FROM identities "
    "  WHERE updated_at >= $at AND updated_at <= $upto GROUP BY mpid) "
    "SELECT t.mpid, t.u FROM touched t WHERE (t.u > $at OR t.mpid > $m) AND ("
    "  EXISTS (SELECT 1 FROM delivered_now d WHERE d.connection_id = $c AND d.mpid = t.mpid) "
    "  OR EXISTS (SELECT 1 FROM memberships m WHERE m.audience_id = $aud AND m.mpid = t.mpid)) "
    "ORDER BY t.u, t.mpid"
)


@pytest.mark.parametrize("limit", [1, 3, 7, 1000])
def test_the_identity_scan_in_pages_finds_what_one_joined_statement_finds(
    con: duckdb.DuckDBPyConnection, limit: int
) -> None:
    # Users 0..59 with one or two identities written at times 0..9; the partner has every third,
    # every fifth is a member of audience 7, and user 1 is a member of another audience only.
    con.execute(
        "INSERT INTO identities SELECT t, 'e' || m, m, 'e' || m, false, (m * 7) % 10 FROM unnest(range(60)) r(m), "
        "unnest(['email', 'customerid']) s(t) WHERE t = 'email' OR m % 4 = 0"
    ).fetchall()
    con.execute("UPDATE identities SET updated_at = 9 WHERE identity_type = 'customerid' AND mpid % 8 = 0")
    con.execute("INSERT INTO memberships SELECT 7, m, 0 FROM range(0, 60, 5) r(m)").fetchall()
    con.execute("INSERT INTO memberships VALUES (8, 1, 0)").fetchall()
    store = DeliveryStore(con)
    store.commit(DeliveryState(4, phase=st.STREAM), added={m: None for m in range(0, 60, 3)}, now_ms=1)
    for at, mpid, upto in [(0, MIN_MPID, 9), (2, 30, 8), (5, MIN_MPID, 5), (9, 59, 9)]:
        expected = con.execute(_JOINED_SCAN, {"at": at, "m": mpid, "upto": upto, "c": 4, "aud": 7}).fetchall()
        found: list[tuple[int, int]] = []
        after = (at, mpid)
        while True:  # pages as the worker reads them: the next one after the last user found
            touched = store.identities_touched(after, upto, limit)
            found += store.identity_candidates(4, 7, touched)
            if len(touched) < limit:
                break
            after = (touched[-1][1], touched[-1][0])
        assert found == [(int(m), int(u)) for m, u in expected]
        assert found or (at, mpid) == (9, 59)


def test_deferred_acknowledgements_are_written_with_the_next_write_as_immediate_ones_would_be(
    tmp_path: Path,
) -> None:
    # The same acknowledgements (a user removed then added again, one added then removed, identity
    # forms replaced) written one by one, and deferred then written with the next save.
    steps: list[tuple[dict[int, str | None], list[int]]] = [
        ({1: "a1", 2: "a2", 3: "a3"}, []),
        ({4: "a4"}, [1, 2]),
        ({1: "b1", 5: "a5"}, [4]),
        ({2: "b2", 3: "b3"}, [5]),
    ]
    written = []
    for deferred in (False, True):
        con = duckdb.connect(str(tmp_path / f"{deferred}.duckdb"))
        DeliveryStore.create_tables(con)
        store = DeliveryStore(con)
        s = DeliveryState(4, phase=st.STREAM)
        store.commit(s, added={9: None}, now_ms=1)
        assert store.delivered_among(4, [1, 9]) == {9}  # read once, then kept in memory
        has = {9}
        for n, (added, removed) in enumerate(steps, 1):
            s.cursor_seq, s.sent = n * 10, s.sent + len(added) + len(removed)
            store.commit(s, added=added, removed=removed, now_ms=n, defer=deferred)
            has = (has - set(removed)) | set(added)
            assert store.delivered_among(4, list(range(10))) == has  # in memory at once either way
        if deferred:
            assert store.pending_since() is not None
            assert _delivered(con, 4) == {9: None} and store.load(4).cursor_seq == 0  # not written yet
            s.inflight_to = 50  # the next batch's mark: one transaction with the acknowledgements
            store.save(s)
            assert store.pending_since() is None
        else:
            s.inflight_to = 50
            store.save(s)
        written.append((_delivered(con, 4), store.load(4), store.delivered_among(4, list(range(10)))))
        con.close()
    assert written[0] == written[1]
    assert written[1][0] == {9: None, 1: "b1", 2: "b2", 3: "b3"} and written[1][1].cursor_seq == 40


def test_reading_what_the_partner_has_writes_the_deferred_acknowledgements_first(
    con: duckdb.DuckDBPyConnection,
) -> None:
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM)
    store.commit(s, added={1: "a1"}, now_ms=1, defer=True)
    assert list(store.delivered_mpids(4)) == [1]
    assert store.pending_since() is None
    store.commit(s, removed=[1], now_ms=2, defer=True)
    store.discard_pending(4)  # a failure: the batch goes again, what the store has stands
    assert store.delivered_among(4, [1]) == {1} and store.pending_since() is None


def test_the_identities_the_partner_was_given_include_the_deferred_acknowledgements_unwritten(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """The identity scan asks every second: it sees the acknowledgements not written yet without
    writing them, and answers as it would once they are written."""
    store = DeliveryStore(con)
    s = DeliveryState(4, phase=st.STREAM)
    store.commit(s, added={1: "a1", 2: "a2", 3: "a3"}, now_ms=1)
    other = DeliveryState(5, phase=st.STREAM)
    store.commit(other, added={1: "x1"}, now_ms=1)
    store.commit(s, added={2: "b2", 4: "b4"}, removed=[1], now_ms=2, defer=True)
    store.commit(s, added={1: "c1"}, removed=[4], now_ms=3, defer=True)
    deferred = store.delivered_identities(4, [1, 2, 3, 4, 9])
    assert deferred == {1: "c1", 2: "b2", 3: "a3"}
    assert store.delivered_identities(5, [1, 2]) == {1: "x1"}  # another connection's rows as stored
    assert store.pending_since() is not None and _delivered(con, 4) == {1: "a1", 2: "a2", 3: "a3"}
    store.flush()
    assert _delivered(con, 4) == deferred == store.delivered_identities(4, [1, 2, 3, 4, 9])
