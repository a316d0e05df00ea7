"""The members a synchronisation adds, taken once with their identities, and read back in batches.

The queue is taken in one transaction when the adds start (members the partner does not have, in
MPID order, and a copy of their identities in the same order), so a batch is a range of MPIDs of
both tables: re-read after a crash, it is the same batch.
Identities written after the queue was taken reach the partner as identity changes (the scan of
changed identities starts before the synchronisation).

For outputs that take a batch as JSON (`registry.JsonOutput`), a batch's records are written in
SQL, one string for the whole batch, so no per-record Python work stands between the store and
the partner; `changes` gives the same batch as `Change`s for every other output, and for a batch
the partner refused part of (it is then split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson

from milepost.outputs.records import Change, Identities, sync_change_id

# A copy of the queued members' identities, in MPID order like the queue: a batch's identities are
# then a range of this table, however the identities table itself is laid out.
DDL = """CREATE TABLE IF NOT EXISTS sync_identities (
    connection_id BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    mpid BIGINT NOT NULL,
    identity_type VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    is_device BOOLEAN NOT NULL)"""

_COPY = """
INSERT INTO sync_identities SELECT $c, $e, i.mpid, i.identity_type, i.value, i.is_device FROM identities i
WHERE i.mpid IN (SELECT mpid FROM sync_queue WHERE connection_id = $c AND epoch = $e) ORDER BY i.mpid"""

# One batch: the queued members after $a (up to $u, at most $n) with their identities of the
# accepted types ($acc; NULL: all) as a record carries them: user identities keyed by type (the
# greatest value when a type has several, as the record's mapping keeps the last in this order)
# and device identities as (type, value) pairs, in order; `ok` when the partner accepts one
# (always, when it accepts all). $h: an MPID the batch is expected to end before, which spares
# reading the rest of the queue (the batch is the same when at least $n members are up to $h).
_BATCH = """
b AS (SELECT mpid, entered_at FROM sync_queue WHERE connection_id = $c AND epoch = $e
      AND ($a IS NULL OR mpid > $a) AND ($u IS NULL OR mpid <= $u) AND ($h IS NULL OR mpid <= $h)
      ORDER BY mpid LIMIT $n),
top AS (SELECT max(mpid) AS hi FROM b),
i AS (SELECT s.mpid, s.identity_type AS type, s.value, s.is_device FROM sync_identities s, top
      WHERE s.connection_id = $c AND s.epoch = $e AND ($a IS NULL OR s.mpid > $a) AND s.mpid <= top.hi
      AND ($h IS NULL OR s.mpid <= $h)
      AND ($acc IS NULL OR list_contains($acc, s.identity_type))),
u AS (SELECT mpid, list_sort(list({'type': type, 'value': value})) AS users
      FROM (SELECT mpid, type, max(value) AS value FROM i WHERE NOT is_device GROUP BY mpid, type)
      GROUP BY mpid),
d AS (SELECT mpid, list_sort(list({'type': type, 'value': value})) AS devices
      FROM i WHERE is_device GROUP BY mpid),
r AS (SELECT b.mpid, b.entered_at, u.users, d.devices,
             ($acc IS NULL OR u.mpid IS NOT NULL OR d.mpid IS NOT NULL) AS ok
      FROM b LEFT JOIN u ON u.mpid = b.mpid LEFT JOIN d ON d.mpid = b.mpid),
j AS (SELECT mpid, entered_at, ok,
             CASE WHEN users IS NULL THEN '{}'
                  WHEN len(users) = 1 THEN concat('{', to_json(users[1].type), ':', to_json(users[1].value), '}')
                  ELSE to_json(map_from_entries(users)) END AS uj,
             coalesce(to_json(devices), '[]') AS dj FROM r)"""

# The record of records.change_record, written in SQL ($pre: "s<connection>-<epoch>-"; $an and
# $en: the audience's names as JSON strings).
# One concat call: a chain of || builds every intermediate string.
_RECORD = (
    """concat('{"id":"s', $pre, mpid, '","audience_id":', $aud, ',"audience_name":', $an, """
    """',"external_name":', $en, ',"mpid":', mpid, ',"action":"add","identities":', uj, """
    """',"device_identities":', dj, ',"timestamp_ms":', entered_at, '}')"""
)

# A JSON batch is staged in a temporary table of the worker's own connection, so the records sent
# and the identities then recorded as delivered are written once. Two tables, used in turn: the next
# batch may be read while the partner still has this one.
_STAGE = (
    "CREATE OR REPLACE TEMP TABLE sync_batch_{slot} AS "
    f"WITH {_BATCH} SELECT mpid, entered_at, ok, uj, dj FROM j"
)

_READ_JSON = f"""
SELECT count(*), min(mpid), max(mpid), count(*) FILTER (WHERE ok),
       string_agg({_RECORD}, ',' ORDER BY mpid) FILTER (WHERE ok),
       sha256(string_agg('s' || $pre || mpid, chr(10) ORDER BY mpid) FILTER (WHERE ok)),
       min(mpid, $sample) FILTER (WHERE ok)
FROM sync_batch_{{slot}}"""


_READ_ROWS = f"WITH {_BATCH} SELECT mpid, entered_at, users, devices FROM r ORDER BY mpid"

# The batch's users the partner now has, with what it was given of their identities (the form of
# records.identities_json): from the staged batch, or (when the staged batch is another) computed
# again.
_STAGED_GIVEN = "SELECT mpid, concat('[', uj, ',', dj, ']') AS given FROM sync_batch_{slot} WHERE ok"
_GIVEN = f"WITH {_BATCH} SELECT mpid, concat('[', uj, ',', dj, ']') AS given FROM j WHERE ok"

_DELIVER = "INSERT {or_replace}INTO delivered (connection_id, mpid, identities) SELECT $c, mpid, given FROM ({given})"

# A remove of one of the batch's users may still wait to be applied to `delivered`; it is dropped
# before the insert, as the partner has the user again. If the user's row is there, the plain insert
# fails and the replacing one follows; if not (a remove is recorded for a user the partner lacks,
# as a streamed remove it did not need), the plain insert succeeds, and the remove must not hide it.
_REVIVE = "DELETE FROM delivered_removed WHERE connection_id = $c AND mpid IN (SELECT mpid FROM ({given}))"

SAMPLE = 5
MAX_MPID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class JsonBatch:
    """A batch of synchronisation adds as the partner gets it.

    `count` members after `after` up to `last` (an MPID: the delivery cursor's next position), of
    which `eligible` have an identity the partner accepts; `records` is their JSON records joined
    by commas (b"" when none), `key` the batch's Idempotency-Key, `sample` a few of their MPIDs.
    """

    epoch: int
    after: int | None
    last: int
    count: int
    eligible: int
    records: bytes
    key: str
    sample: tuple[int, ...]
    accepted: tuple[str, ...] | None
    limit: int = 0  # the batch size it was read with
    slot: int = 0  # where it is staged

    def change_id(self, connection_id: int, mpid: int) -> str:
        return sync_change_id("s", connection_id, self.epoch, mpid)


class SyncQueue:
    """The queue of one worker's connection, on the worker's own store connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._slot = 0
        self._staged: dict[int, JsonBatch] = {}  # the batch staged in each table of this connection
        self._span: tuple[tuple[int, int, int], int] | None = None  # the last batch's MPID span

    @staticmethod
    def create_tables(con: duckdb.DuckDBPyConnection) -> None:
        known = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'sync_identities' AND NOT temporary"
        ).fetchall()[0][0]
        con.execute(DDL).fetchall()
        if not known:  # queues taken before their identities were copied: copy them now
            for c, e in con.execute("SELECT DISTINCT connection_id, epoch FROM sync_queue").fetchall():
                con.execute(_COPY, {"c": c, "e": e}).fetchall()

    def take(self, connection_id: int, audience_id: int, epoch: int) -> None:
        """Queue the members the partner does not have yet, with a copy of their identities (in the
        caller's transaction)."""
        self.drop(connection_id)
        self.con.execute(
            "INSERT INTO sync_queue SELECT $c, $e, m.mpid, m.entered_at FROM memberships m "
            "WHERE m.audience_id = $aud AND NOT EXISTS "
            "(SELECT 1 FROM delivered_now d WHERE d.connection_id = $c AND d.mpid = m.mpid) ORDER BY m.mpid",
            {"c": connection_id, "e": epoch, "aud": audience_id},
        ).fetchall()
        self.con.execute(_COPY, {"c": connection_id, "e": epoch}).fetchall()

    def drop(self, connection_id: int) -> None:
        for table in ("sync_queue", "sync_identities"):
            self.con.execute(f"DELETE FROM {table} WHERE connection_id = ?", [connection_id]).fetchall()

    def changes(
        self,
        connection_id: int,
        audience_id: int,
        epoch: int,
        after: int | None,
        limit: int,
        accepted: Sequence[str] | None,
        hashing: str | None,
        upto: int | None = None,
    ) -> list[Change]:
        """The batch as adds carrying the identities the partner accepts (hashed if asked)."""
        params = self._params(connection_id, epoch, after, upto, limit, accepted)
        out = []
        for m, t, users, devices in self.con.execute(_READ_ROWS, params).fetchall():
            ids = Identities(
                {u["type"]: u["value"] for u in users or ()},
                tuple((d["type"], d["value"]) for d in devices or ()),
            ).only(accepted, hashing)
            mpid = int(m)
            change_id = sync_change_id("s", connection_id, epoch, mpid)
            out.append(Change(change_id, audience_id, mpid, "add", int(t), mpid, ids))
        return out

    def read_json(
        self,
        connection_id: int,
        audience_id: int,
        epoch: int,
        after: int | None,
        limit: int,
        accepted: Sequence[str] | None,
        names: tuple[str, str],
        beside: JsonBatch | None = None,
    ) -> JsonBatch | None:
        """The next batch with its records as JSON; None when the queue has no more. `beside`: a
        batch not acknowledged yet, whose staged records must stay."""
        slot = self._slot = 1 - (self._slot if beside is None else beside.slot)
        stage = _STAGE.replace("{slot}", str(slot))
        params = self._params(connection_id, epoch, after, None, limit, accepted)
        span = self._span
        if after is not None and span is not None and span[0] == (connection_id, epoch, limit):
            # MPIDs are spread like the last batch's: read up to twice its span, unless fewer fit.
            params["h"] = min(after + 2 * span[1], MAX_MPID)
            self.con.execute(stage, params).fetchall()
            staged = self.con.execute(f"SELECT count(*) FROM sync_batch_{slot}").fetchall()[0][0]
            if staged < limit:
                params["h"] = None
        if params["h"] is None:
            self.con.execute(stage, params).fetchall()
        params = {
            "aud": audience_id,
            "an": orjson.dumps(names[0]).decode(),
            "en": orjson.dumps(names[1]).decode(),
            "pre": f"{connection_id}-{epoch}-",
            "sample": SAMPLE,
        }
        row = self.con.execute(_READ_JSON.replace("{slot}", str(slot)), params).fetchall()[0]
        count, first, last, eligible, records, digest, sample = row
        self._staged.pop(slot, None)
        if not count:
            return None
        start = int(first) - 1 if after is None else after
        self._span = ((connection_id, epoch, limit), max(1, int(last) - start))
        batch = self._staged[slot] = JsonBatch(
            epoch,
            after,
            int(last),
            int(count),
            int(eligible),
            (records or "").encode("utf-8"),
            (digest or "")[:40],
            tuple(int(m) for m in sample or ()),
            None if accepted is None else tuple(accepted),
            limit,
            slot,
        )
        return batch

    def deliver(self, connection_id: int, batch: JsonBatch, *, replace: bool = True) -> None:
        """Record what the partner now has of an acknowledged batch (in the caller's transaction).
        `replace=False`: a plain insert, which fails on a user already recorded."""
        if self._staged.get(batch.slot) is batch:
            given, params = _STAGED_GIVEN.replace("{slot}", str(batch.slot)), {"c": connection_id}
        else:
            given = _GIVEN
            params = self._params(
                connection_id, batch.epoch, batch.after, batch.last, batch.count, batch.accepted
            )
        self.con.execute(_REVIVE.replace("{given}", given), params).fetchall()
        sql = _DELIVER.replace("{given}", given).replace("{or_replace}", "OR REPLACE " if replace else "")
        self.con.execute(sql, params).fetchall()

    @staticmethod
    def _params(
        connection_id: int,
        epoch: int,
        after: int | None,
        upto: int | None,
        limit: int,
        accepted: Sequence[str] | None,
    ) -> dict[str, Any]:
        return {
            "c": connection_id,
            "e": epoch,
            "a": after,
            "u": upto,
            "n": limit,
            "acc": None if accepted is None else list(accepted),
            "h": None,
        }
