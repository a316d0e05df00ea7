"""Writing acknowledged batches: one connection's, or several connections' in one transaction.

Under load an evaluation wakes many connections at once, and each then records its acknowledged
batch (cursor, counters, what the partner has). Every statement costs the store about a millisecond
of CPU whatever its size, so `AckWriter` writes the acknowledgements that arrive while one is being
written together: one transaction and a handful of statements for all of them (group commit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from milepost.outputs.transactions import write_adding

STATE_FIELDS = (
    "connection_id",
    "phase",
    "epoch",
    "cursor_seq",
    "sync_after",
    "sent",
    "failed",
    "ineligible",
    "last_error",
    "last_attempt_at",
    "last_success_at",
    "failing_since",
    "subscribed",
    "identities_at",
    "identities_mpid",
    "inflight_to",
)
_TYPES = {"phase": "VARCHAR", "last_error": "VARCHAR", "subscribed": "VARCHAR"}  # else BIGINT
STATE_COLUMNS = ", ".join(STATE_FIELDS)
# A connection's row is updated in place: an upsert (delete and insert on the key) costs several
# times more, and the row exists after the first write.
_UPDATE_ONE = (
    f"UPDATE delivery_state SET {', '.join(f'{c} = ?' for c in STATE_FIELDS[1:])} WHERE connection_id = ?"
)
_INSERT_ONE = f"INSERT INTO delivery_state ({STATE_COLUMNS}) VALUES ({', '.join('?' * len(STATE_FIELDS))})"
_ROWS = "SELECT " + ", ".join(
    f"unnest(${n}::{_TYPES.get(c, 'BIGINT')}[]) AS {c}" for n, c in enumerate(STATE_FIELDS, 1)
)
_UPDATE_MANY = (
    f"UPDATE delivery_state SET {', '.join(f'{c} = v.{c}' for c in STATE_FIELDS[1:])} "
    f"FROM ({_ROWS}) v WHERE delivery_state.connection_id = v.connection_id"
)
_INSERT_MISSING = (
    f"INSERT INTO delivery_state ({STATE_COLUMNS}) SELECT {STATE_COLUMNS} FROM ({_ROWS}) v "
    "WHERE v.connection_id NOT IN (SELECT connection_id FROM delivery_state)"
)

# An acknowledged remove is recorded in `delivered_removed` (an append, whatever the size of
# `delivered`) rather than deleted from `delivered`: the delete is a join that scans all of
# `delivered` (20 ms for 1,000 removes against 8.5 M rows, alone; several times that under load).
# The removes are applied together once `APPLY_REMOVED_AT` are waiting: one scan for that many.
APPLY_REMOVED_AT = 50_000
_RECORD_REMOVED = "INSERT INTO delivered_removed SELECT unnest(?::BIGINT[]), unnest(?::BIGINT[])"
# An added MPID whose remove is still waiting has its row in `delivered` still (unless the remove
# was of a user the partner lacked): the remove is dropped, and the row replaced or inserted
# (through the key's index, at a cost in proportion to the rows).
_REVIVE = (
    "DELETE FROM delivered_removed USING (SELECT unnest(?::BIGINT[]) AS c, unnest(?::BIGINT[]) AS m) x "
    "WHERE delivered_removed.connection_id = x.c AND delivered_removed.mpid = x.m "
    "RETURNING delivered_removed.connection_id, delivered_removed.mpid"
)
_ADD = (
    "INSERT {or_replace}INTO delivered (connection_id, mpid, identities) "
    "SELECT unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::VARCHAR[])"
)
_APPLY = (
    "DELETE FROM delivered USING (SELECT DISTINCT connection_id, mpid FROM delivered_removed) r "
    "WHERE delivered.connection_id = r.connection_id AND delivered.mpid = r.mpid"
)


def _apply_removed(con: duckdb.DuckDBPyConnection) -> None:
    """Delete the waiting removes from `delivered`, in the caller's transaction."""
    con.execute(_APPLY).fetchall()
    con.execute("DELETE FROM delivered_removed").fetchall()


@dataclass(frozen=True, slots=True)
class Ack:
    """One connection's write: its state row, and the MPIDs the partner no longer has and now has
    (`forms`: the identities each added MPID was sent with)."""

    state: list[Any]
    removes: list[int]
    adds: list[int]
    forms: list[str | None]


def write_state(con: duckdb.DuckDBPyConnection, row: Sequence[Any]) -> None:
    updated = con.execute(_UPDATE_ONE, [*row[1:], row[0]]).fetchall()
    if not updated or not updated[0][0]:
        con.execute(_INSERT_ONE, list(row)).fetchall()


def write_acks(con: duckdb.DuckDBPyConnection, acks: Sequence[Ack], *, replace: bool) -> None:
    """The acknowledgements' statements, in the caller's transaction (`replace`: an added MPID may
    be one the partner has already, as after an identity change). Removes are recorded to be
    applied later (see `APPLY_REMOVED_AT`)."""
    if len(acks) == 1:
        write_state(con, acks[0].state)
    else:
        columns = [list(c) for c in zip(*(a.state for a in acks), strict=True)]
        updated = con.execute(_UPDATE_MANY, columns).fetchall()
        if not updated or updated[0][0] < len(acks):
            con.execute(_INSERT_MISSING, columns).fetchall()
    removed = [(a.state[0], m) for a in acks for m in a.removes]
    if removed:
        con.execute(_RECORD_REMOVED, [[c for c, _ in removed], [m for _, m in removed]]).fetchall()
    added = [(a.state[0], m, f) for a in acks for m, f in zip(a.adds, a.forms, strict=True)]
    if added:
        revived = set(con.execute(_REVIVE, [[c for c, _, _ in added], [m for _, m, _ in added]]).fetchall())
        fresh = [r for r in added if (r[0], r[1]) not in revived]
        again = [r for r in added if (r[0], r[1]) in revived]
        for rows, or_replace in ((fresh, replace), (again, True)):
            if rows:
                con.execute(
                    _ADD.format(or_replace="OR REPLACE " if or_replace else ""),
                    [[c for c, _, _ in rows], [m for _, m, _ in rows], [f for _, _, f in rows]],
                ).fetchall()
    if removed:
        waiting = con.execute("SELECT count(*) FROM delivered_removed").fetchall()[0][0]
        if waiting >= APPLY_REMOVED_AT:
            _apply_removed(con)


def commit_acks(con: duckdb.DuckDBPyConnection, acks: Sequence[Ack]) -> None:
    """Write the acknowledgements in one transaction."""
    write_adding(con, lambda replace: write_acks(con, acks, replace=replace))


class _Waiting:
    __slots__ = ("ack", "done", "error")

    def __init__(self, ack: Ack) -> None:
        self.ack = ack
        self.done = False
        self.error: BaseException | None = None


# How long the writer of a group waits for more acknowledgements: while another arrived within the
# last `GATHER_STEP_S`, up to `GATHER_MAX_S` in all. A group costs much the same whatever its size
# (measured when its removes' `DELETE` scanned all of `delivered`: 12.7 of 27 ms of CPU for 11
# connections' 2,500 rows against 800,000), and the connections an evaluation wakes reach here
# spread over tens of milliseconds when the cores are busy. With 4 / 20 ms, fifty connections
# under load wrote 79 groups in a 17.8 s run; with 20 / 100 ms, 54-59 in 15.9-17.2 s, with 11-24%
# less CPU. A connection streams a batch about once per evaluation, so the wait costs its partner
# at most 0.1 s.
GATHER_STEP_S = 0.02
GATHER_MAX_S = 0.1


class AckWriter:
    """Group commit for the connections' workers: a worker's acknowledgement is written by the first
    worker that finds no write under way, together with every acknowledgement queued meanwhile (on
    that worker's own store connection), after a short gather window (see `GATHER_STEP_S`; none
    for a write alone right after a group of one). `write` returns once the caller's is committed."""

    def __init__(self, gather_step_s: float = GATHER_STEP_S, gather_max_s: float = GATHER_MAX_S) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False
        self._gather_step_s = gather_step_s
        self._gather_max_s = gather_max_s
        self._arrivals = 0  # acknowledgements queued so far (the gather window watches it grow)
        self._last_group = 0  # the size of the group written last

    def _gather(self) -> None:
        """Wait (holding the writer's role, `_cond` held) while acknowledgements keep arriving: a
        plain timed wait, as waking the waiting workers at every arrival would cost more."""
        if self._gather_max_s <= 0 or (self._last_group == 1 and len(self._queue) == 1):
            return  # a lone connection's writes follow each other: none waits for company
        deadline = time.monotonic() + self._gather_max_s
        seen = self._arrivals
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(self._gather_step_s, left))
            if self._arrivals == seen:
                return  # none arrived within a step
            seen = self._arrivals

    def write(self, con: duckdb.DuckDBPyConnection, ack: Ack) -> None:
        mine = _Waiting(ack)
        with self._cond:
            self._queue.append(mine)
            self._arrivals += 1
            while self._writing and not mine.done:
                self._cond.wait()
            if not mine.done:
                self._writing = True
                self._gather()
                group, self._queue = self._queue, []
                self._last_group = len(group)
        if mine.done:
            if mine.error is not None:
                raise RuntimeError("writing a group of acknowledgements failed") from mine.error
            return
        error: BaseException | None = None
        try:
            commit_acks(con, [w.ack for w in group])
        except BaseException as e:
            error = e
            raise
        finally:
            with self._cond:
                for w in group:
                    w.done, w.error = True, error
                self._writing = False
                self._cond.notify_all()
