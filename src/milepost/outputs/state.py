"""Delivery state in the store, beside the outbox it follows.

Per connection: a cursor (where delivery stands in the outbox, or in a synchronisation), counters
and the last error (`delivery_state`); the MPIDs the partner has (`delivered_now`: the rows of
`delivered` less the removes of `delivered_removed` not applied yet; what reconciliation compares
membership with); and the records the partner refused (`dead_letters`). The cursor, the
counters and `delivered` move in one transaction, only after the partner acknowledged a batch, so
a crash re-sends at most the unacknowledged batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import duckdb
import orjson

from milepost.outputs.ack_writer import STATE_COLUMNS, Ack, AckWriter, write_acks, write_state
from milepost.outputs.delivered import DeliveredSet
from milepost.outputs.records import Identities
from milepost.outputs.sync_queue import JsonBatch, SyncQueue
from milepost.outputs.transactions import retrying, write, write_adding

DELIVERY_DDL = [
    """CREATE TABLE IF NOT EXISTS delivery_state (
        connection_id BIGINT PRIMARY KEY,
        phase VARCHAR NOT NULL,
        epoch BIGINT NOT NULL,
        cursor_seq BIGINT NOT NULL,
        sync_after BIGINT,
        sent BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        ineligible BIGINT NOT NULL,
        last_error VARCHAR,
        last_attempt_at BIGINT,
        last_success_at BIGINT,
        failing_since BIGINT)""",
    """CREATE TABLE IF NOT EXISTS delivered (
        connection_id BIGINT NOT NULL,
        mpid BIGINT NOT NULL,
        PRIMARY KEY (connection_id, mpid))""",
    # What the partner was given of each delivered user's identities (identity changes: remove + add).
    "ALTER TABLE delivered ADD COLUMN IF NOT EXISTS identities VARCHAR",
    # Removes acknowledged but not yet deleted from `delivered`: a delete there scans the whole
    # table, so removes are recorded here and applied in bulk (`ack_writer.APPLY_REMOVED_AT`).
    """CREATE TABLE IF NOT EXISTS delivered_removed (
        connection_id BIGINT NOT NULL,
        mpid BIGINT NOT NULL)""",
    # What the partner has: what every read of `delivered` means.
    """CREATE OR REPLACE VIEW delivered_now AS SELECT d.* FROM delivered d WHERE NOT EXISTS
        (SELECT 1 FROM delivered_removed r WHERE r.connection_id = d.connection_id AND r.mpid = d.mpid)""",
    # The subscription the partner was told of (Firehose), and where the identity-change scan stands.
    "ALTER TABLE delivery_state ADD COLUMN IF NOT EXISTS subscribed VARCHAR",
    "ALTER TABLE delivery_state ADD COLUMN IF NOT EXISTS identities_at BIGINT",
    "ALTER TABLE delivery_state ADD COLUMN IF NOT EXISTS identities_mpid BIGINT",
    # The position of the last change of the batch sent but not acknowledged: after a crash the
    # same batch is sent again (the same ids, so the same Idempotency-Key).
    "ALTER TABLE delivery_state ADD COLUMN IF NOT EXISTS inflight_to BIGINT",
    # The members a synchronisation adds, taken once when it starts (in MPID order, so reading it
    # in batches by MPID touches only the row groups it needs).
    """CREATE TABLE IF NOT EXISTS sync_queue (
        connection_id BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        mpid BIGINT NOT NULL,
        entered_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        connection_id BIGINT NOT NULL,
        record JSON NOT NULL,
        status INTEGER,
        body VARCHAR,
        failed_at BIGINT NOT NULL)""",
]

# Phases of a connection's delivery.
NEW = "new"  # never active yet
INACTIVE = "inactive"  # stopped; the partner keeps what `delivered` lists
SYNC_REMOVE = "sync_remove"  # (re)activation, step 1: removes for delivered users no longer members
SYNC_ADD = "sync_add"  # step 2: adds for members not delivered yet
STREAM = "stream"  # every change of the outbox after `cursor_seq`
DRAIN = "drain"  # on_deactivate remove_members: removes for everyone delivered, then inactive
SYNC_PHASES = (SYNC_REMOVE, SYNC_ADD, DRAIN)


@dataclass
class DeliveryState:
    connection_id: int
    phase: str = NEW
    epoch: int = 0
    cursor_seq: int = 0
    sync_after: int | None = None  # the last MPID acknowledged during a synchronisation
    sent: int = 0
    failed: int = 0
    ineligible: int = 0
    last_error: str | None = None
    last_attempt_at: int | None = None
    last_success_at: int | None = None
    failing_since: int | None = None
    subscribed: str | None = None  # JSON of the subscription the partner has (None: not subscribed)
    identities_at: int | None = None  # identity changes up to (identities_at, identities_mpid) are handled
    identities_mpid: int | None = None
    inflight_to: int | None = None  # the unacknowledged batch ends here (an outbox seq or an MPID)

    def row(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: dict[str, Any]
    status: int | None
    body: str


@dataclass
class _Pending:
    """Acknowledged changes not written yet: what the partner now has, net of their order."""

    state: DeliveryState  # the worker's state object, written as it is when the changes are
    now_ms: int
    since: float = field(default_factory=time.monotonic)
    added: dict[int, str | None] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    def merge(self, added: Mapping[int, str | None], removed: Iterable[int]) -> None:
        for m in removed:
            self.added.pop(m, None)
            self.removed.add(m)
        for m, form in added.items():
            self.removed.discard(m)
            self.added[m] = form


class DeliveryStore:
    """One connection to the store per worker (DuckDB connections are not shared across threads)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, acks: AckWriter | None = None) -> None:
        self.con = con
        self.acks = acks  # writes acknowledgements and plain state saves with other connections' (else alone)
        self.sync = SyncQueue(con)
        # Per connection, what the partner has (read once, then kept by `commit`): see `delivered`.
        self._delivered: dict[int, DeliveredSet] = {}
        self._pending: _Pending | None = None  # an acknowledgement not written yet (`commit(defer=True)`)

    @staticmethod
    def create_tables(con: duckdb.DuckDBPyConnection) -> None:
        for ddl in DELIVERY_DDL:
            con.execute(ddl).fetchall()
        SyncQueue.create_tables(con)

    def close(self) -> None:
        self.con.close()

    # ---- state ---------------------------------------------------------------------------------

    def load(self, connection_id: int) -> DeliveryState:
        rows = self.con.execute(
            f"SELECT {STATE_COLUMNS} FROM delivery_state WHERE connection_id = ?", [connection_id]
        ).fetchall()
        if not rows:
            return DeliveryState(connection_id)
        return DeliveryState(*rows[0])

    def save(self, state: DeliveryState) -> None:
        if self._pending is not None:
            self.commit(state, now_ms=self._pending.now_ms)  # with the acknowledgement not written yet
            return
        if self.acks is not None:
            # With the other connections' writes: the connections an evaluation wakes each mark
            # their next batch as in flight at about the same moment, and one transaction for all
            # of them costs about what one costs alone.
            self.acks.write(self.con, Ack(state.row(), [], [], []))
            return
        retrying(lambda: self._write_state(state))

    def _write_state(self, state: DeliveryState) -> None:
        write_state(self.con, state.row())

    def commit(
        self,
        state: DeliveryState,
        *,
        added: Mapping[int, str | None] | None = None,
        removed: Iterable[int] = (),
        dead: Sequence[DeadLetter] = (),
        synced: JsonBatch | None = None,
        now_ms: int,
        defer: bool = False,
    ) -> None:
        """Record an acknowledged batch: the new cursor and counters, what the partner now has, and
        the records it refused, in one transaction. `added` maps each added MPID to the identities
        it was sent with (see `records.identities_json`); `synced` is a batch of synchronisation
        adds sent as JSON, whose members the partner now has.

        With `defer`, the batch is recorded with the store's next write of the connection (`save`,
        `commit`, `flush`): a streaming connection's next batch is then marked as in flight in the
        same transaction. Until then the partner's set is kept in memory; a crash before it only
        sends the acknowledged batch again, as a crash before this commit would."""
        own_adds = sorted(added or {})
        own_removes = sorted(set(removed) - set(added or {}))
        pending = self._pending or _Pending(state, now_ms)
        pending.merge(added or {}, own_removes)
        if defer and synced is None and not dead:
            self._pending = pending
            has = self._delivered.get(state.connection_id)
            if has is not None:
                has.apply(own_adds, own_removes)
            return
        self._pending = None
        adds = sorted(pending.added)
        removes = sorted(pending.removed)

        ack = Ack(state.row(), removes, adds, [pending.added[m] for m in adds])

        def work(replace: bool) -> None:
            write_acks(self.con, [ack], replace=replace)
            if synced is not None:
                self.sync.deliver(state.connection_id, synced, replace=replace)
            for d in dead:
                self.con.execute(
                    "INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?)",
                    [state.connection_id, orjson.dumps(d.record).decode(), d.status, d.body, now_ms],
                ).fetchall()

        cid = state.connection_id
        try:
            if self.acks is not None and synced is None and not dead:
                self.acks.write(self.con, ack)  # with the acknowledgements of other connections
            else:
                write_adding(self.con, work)
        except BaseException:
            self._delivered.pop(cid, None)  # whether it committed is not known: read it again
            raise
        has = self._delivered.get(cid)
        if has is not None:
            if synced is None:  # (a deferred part is in memory already)
                has.apply(own_adds, own_removes)
            else:  # written by the store from the queue: read it again when needed
                del self._delivered[cid]

    def pending_since(self) -> float | None:
        """The monotonic time of the oldest acknowledgement not written yet (None: none)."""
        return None if self._pending is None else self._pending.since

    def flush(self) -> None:
        """Write the acknowledgements not written yet, with the connection's state as it is now."""
        if self._pending is not None:
            self.commit(self._pending.state, now_ms=self._pending.now_ms)

    def discard_pending(self, connection_id: int) -> None:
        """Forget the acknowledgements not written yet (after a failure: the batch goes again)."""
        if self._pending is not None:
            self._pending = None
            self._delivered.pop(connection_id, None)

    def forget(self, connection_id: int) -> None:
        """Drop everything kept for a deleted connection."""
        self._delivered.pop(connection_id, None)
        self._pending = None

        def work() -> None:
            for table in (
                "delivery_state",
                "delivered",
                "delivered_removed",
                "dead_letters",
                "sync_queue",
                "sync_identities",
            ):
                self.con.execute(f"DELETE FROM {table} WHERE connection_id = ?", [connection_id]).fetchall()

        write(self.con, work)

    # ---- what to send ----------------------------------------------------------------------------

    def head_seq(self) -> int:
        rows = self.con.execute("SELECT coalesce(max(seq), 0) FROM membership_changes").fetchall()
        return int(rows[0][0])

    def outbox(
        self, audience_id: int, after_seq: int, limit: int, upto: int | None = None
    ) -> list[tuple[int, int, str, int]]:
        """(seq, mpid, action, changed_at) of the audience's changes after `after_seq` (up to
        `upto`), in seq order."""
        rows = self.con.execute(
            "SELECT seq, mpid, action, changed_at FROM membership_changes "
            "WHERE seq > $a AND ($u IS NULL OR seq <= $u) AND audience_id = $aud ORDER BY seq LIMIT $n",
            {"a": after_seq, "u": upto, "aud": audience_id, "n": limit},
        ).fetchall()
        return [(int(s), int(m), str(a), int(t)) for s, m, a, t in rows]

    def stale(
        self, connection_id: int, audience_id: int, after: int | None, limit: int, upto: int | None = None
    ) -> list[int]:
        """Delivered MPIDs (after `after`, up to `upto`) that are no longer members of the audience."""
        self.flush()  # the acknowledgements not written yet are read too
        rows = self.con.execute(
            "SELECT d.mpid FROM delivered_now d WHERE d.connection_id = $c AND ($a IS NULL OR d.mpid > $a) "
            "AND ($u IS NULL OR d.mpid <= $u) "
            "AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.audience_id = $aud AND m.mpid = d.mpid) "
            "ORDER BY d.mpid LIMIT $n",
            {"c": connection_id, "a": after, "u": upto, "aud": audience_id, "n": limit},
        ).fetchall()
        return [int(r[0]) for r in rows]

    def missing(
        self, connection_id: int, audience_id: int, after: int | None, limit: int, upto: int | None = None
    ) -> list[tuple[int, int]]:
        """(mpid, entered_at) of members (after `after`, up to `upto`) the partner does not have yet."""
        self.flush()  # the acknowledgements not written yet are read too
        rows = self.con.execute(
            "SELECT m.mpid, m.entered_at FROM memberships m WHERE m.audience_id = $aud "
            "AND ($a IS NULL OR m.mpid > $a) AND ($u IS NULL OR m.mpid <= $u) AND NOT EXISTS "
            "(SELECT 1 FROM delivered_now d WHERE d.connection_id = $c AND d.mpid = m.mpid) "
            "ORDER BY m.mpid LIMIT $n",
            {"c": connection_id, "a": after, "u": upto, "aud": audience_id, "n": limit},
        ).fetchall()
        return [(int(m), int(t)) for m, t in rows]

    def queue_sync(self, connection_id: int, audience_id: int, epoch: int) -> None:
        """Take the members the partner does not have yet, with their identities, to add them in batches."""
        self.flush()  # the acknowledgements not written yet are read too

        write(self.con, lambda: self.sync.take(connection_id, audience_id, epoch))

    def unqueue(self, connection_id: int) -> None:
        write(self.con, lambda: self.sync.drop(connection_id))

    def delivered_after(
        self, connection_id: int, after: int | None, limit: int, upto: int | None = None
    ) -> list[int]:
        self.flush()  # the acknowledgements not written yet are read too
        rows = self.con.execute(
            "SELECT mpid FROM delivered_now WHERE connection_id = $c AND ($a IS NULL OR mpid > $a) "
            "AND ($u IS NULL OR mpid <= $u) ORDER BY mpid LIMIT $n",
            {"c": connection_id, "a": after, "u": upto, "n": limit},
        ).fetchall()
        return [int(r[0]) for r in rows]

    def delivered_among(self, connection_id: int, mpids: Sequence[int]) -> set[int]:
        """Which of these MPIDs the partner has (from memory once the connection's rows were read)."""
        if not mpids:
            return set()
        has = self._delivered.get(connection_id)
        if has is None:
            has = self._delivered[connection_id] = DeliveredSet(self.delivered_mpids(connection_id))
        return has.among(mpids)

    def delivered_mpids(self, connection_id: int) -> Any:
        """Every MPID the partner has, as an array."""
        self.flush()  # the acknowledgements not written yet are read too
        return self.con.execute(
            "SELECT mpid FROM delivered_now WHERE connection_id = ?", [connection_id]
        ).fetchnumpy()["mpid"]

    def delivered_identities(self, connection_id: int, mpids: Sequence[int]) -> dict[int, str | None]:
        """What the partner was given of these users' identities, for those it has."""
        if not mpids:
            return {}
        rows = self.con.execute(
            "SELECT mpid, identities FROM delivered_now WHERE connection_id = ? "
            "AND mpid IN (SELECT unnest(?::BIGINT[]))",
            [connection_id, sorted(set(mpids))],
        ).fetchall()
        found = {int(m): i for m, i in rows}
        # The acknowledgements not written yet count too: laid over the rows rather than written
        # first, which would cost the identity scan a transaction of its own every second.
        pending = self._pending
        if pending is not None and pending.state.connection_id == connection_id:
            for m in mpids:
                if m in pending.removed:
                    found.pop(m, None)
                elif m in pending.added:
                    found[m] = pending.added[m]
        return found

    def identities_touched(self, after: tuple[int, int], upto: int, limit: int) -> list[tuple[int, int]]:
        """(mpid, updated_at) of users whose identities were written after `after` = (updated_at, mpid)
        and up to `upto`, in that order. Whether the partner has them or they are members is asked of
        the few found (`identity_candidates`): joining here would read the connection's delivered
        users and the audience's members on every scan, mostly to find nothing."""
        at, mpid = after
        rows = self.con.execute(
            "SELECT mpid, max(updated_at) AS u FROM identities WHERE updated_at >= $at AND updated_at <= $upto "
            "GROUP BY mpid HAVING u > $at OR mpid > $m ORDER BY u, mpid LIMIT $n",
            {"at": at, "m": mpid, "upto": upto, "n": limit},
        ).fetchall()
        return [(int(m), int(u)) for m, u in rows]

    def identity_candidates(
        self, connection_id: int, audience_id: int, touched: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """Those of `touched` (from `identities_touched`) the partner has or that are members: whose
        identities the partner may hold out of date."""
        mpids = [m for m, _ in touched]
        if not mpids:
            return []
        keep = self.delivered_among(connection_id, mpids) | self.members_among(audience_id, mpids)
        return [(m, u) for m, u in touched if m in keep]

    def members_among(self, audience_id: int, mpids: Sequence[int]) -> set[int]:
        if not mpids:
            return set()
        rows = self.con.execute(
            "SELECT mpid FROM memberships WHERE audience_id = ? AND mpid IN (SELECT unnest(?::BIGINT[]))",
            [audience_id, sorted(set(mpids))],
        ).fetchall()
        return {int(r[0]) for r in rows}

    def identities(self, mpids: Sequence[int]) -> dict[int, Identities]:
        if not mpids:
            return {}
        # Plain rows, grouped here: the batch's few rows cost less so than aggregated lists in SQL.
        rows = self.con.execute(
            "SELECT mpid, identity_type, value, is_device FROM identities "
            "WHERE mpid IN (SELECT unnest(?::BIGINT[])) ORDER BY mpid, identity_type, value",
            [sorted(set(mpids))],
        ).fetchall()
        users: dict[int, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
        for m, t, v, device in rows:
            users.setdefault(m, ([], []))[1 if device else 0].append((t, v))
        empty = Identities()
        return {
            m: Identities(dict(found[0]), tuple(found[1])) if (found := users.get(m)) else empty
            for m in mpids
        }


def stats(
    con: duckdb.DuckDBPyConnection, connection_id: int, audience_id: int, now_ms: int | None = None
) -> dict[str, Any]:
    """What a user sees of a connection's delivery: sent, pending, failed, ineligible, last error,
    and lag (how long the oldest change not yet delivered has waited, in ms; 0 when none waits)."""
    store = DeliveryStore(con)
    state = store.load(connection_id)
    pending = 0
    oldest: int | None = None
    if state.phase == STREAM:
        count, first = con.execute(
            "SELECT count(*), min(changed_at) FROM membership_changes WHERE seq > ? AND audience_id = ?",
            [state.cursor_seq, audience_id],
        ).fetchall()[0]
        pending, oldest = int(count), None if first is None else int(first)
    elif state.phase in (SYNC_REMOVE, SYNC_ADD):
        missing = con.execute(
            "SELECT count(*) FROM memberships m WHERE m.audience_id = $aud AND NOT EXISTS "
            "(SELECT 1 FROM delivered_now d WHERE d.connection_id = $c AND d.mpid = m.mpid)",
            {"aud": audience_id, "c": connection_id},
        ).fetchall()
        pending = int(missing[0][0])
    elif state.phase == DRAIN:
        left = con.execute(
            "SELECT count(*) FROM delivered_now WHERE connection_id = ?", [connection_id]
        ).fetchall()
        pending = int(left[0][0])
    dead = con.execute(
        "SELECT count(*) FROM dead_letters WHERE connection_id = ?", [connection_id]
    ).fetchall()
    return {
        "phase": state.phase,
        "sent": state.sent,
        "pending": pending,
        "failed": state.failed,
        "dead_letters": int(dead[0][0]),
        "ineligible": state.ineligible,
        "last_error": state.last_error,
        "last_attempt_at": state.last_attempt_at,
        "last_success_at": state.last_success_at,
        "failing_since": state.failing_since,
        "lag_ms": 0 if oldest is None or now_ms is None else max(0, now_ms - oldest),
        "subscribed": state.subscribed is not None,
    }


def dead_letters(
    con: duckdb.DuckDBPyConnection, connection_id: int, limit: int = 100
) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT record, status, body, failed_at FROM dead_letters WHERE connection_id = ? "
        "ORDER BY failed_at DESC LIMIT ?",
        [connection_id, limit],
    ).fetchall()
    return [{"record": orjson.loads(r), "status": s, "body": b, "at": a} for r, s, b, a in rows]
