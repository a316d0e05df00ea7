"""The embedded store: DuckDB tables for events and profiles; sealed ranges of events also copied to
append-only Parquet segments, which Spark reads in place."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from milepost.engines import duckdb_schema
from milepost.engines.duckdb_rows import (
    batch_table,
    consent_table,
    device_table,
    event_table,
    identity_table,
    user_table,
)
from milepost.engines.duckdb_schema import (
    CONSENTS_UPSERT,
    DEVICES_UPSERT,
    IDENTITIES_UPSERT,
    MESSAGE_KEYS,
    REQUEST_KEYS,
    USERS_UPDATE_LISTS,
    USERS_UPDATE_SEEN,
    USERS_UPSERT,
    sealed_through,
)
from milepost.errors import EngineError, StoreLocked
from milepost.ingest.plan import CommitPlan, Snapshot
from milepost.ingest.state import StateMirror

# Columns shared by `events` and the Parquet segments, in table order.
EVENT_FIELDS = (
    "event_id, mpid, input_id, event_type, name, name_lc, custom_event_type, action, is_install, is_upgrade, "
    "ts, received_at, total_amount, transaction_id, currency_code, coupon_code, attrs, products, "
    "source_message_id, data"
)


CHECKPOINT_THRESHOLD = "256MB"
# A server checkpoints on a thread of its own once the WAL holds this much, before a COMMIT crosses
# the threshold above and checkpoints inside it, stalling every request of that group commit (about
# 1 s at 20,000 events/s). DuckDB lets commits go on while a checkpoint runs.
CHECKPOINT_AHEAD_BYTES = 192 * 2**20

# From this many stored users on, known users' rows are updated rather than upserted: two statements
# instead of one, which costs more in a small store and far less in a large one (duckdb_schema).
LARGE_USERS = 500_000
# Up to this many known users, a small store updates rather than upserts those only seen again.
FEW_KNOWN_USERS = 8
# DuckDB's worker threads per core, unless configured. The writer's, the evaluator's and delivery's
# statements share one task queue: with one worker per core, an evaluation's parallel parts waited
# behind the others'; with two the cores are shared between them instead (benchmarks/RESULTS.md).
THREADS_PER_CORE = 2


@dataclass(frozen=True)
class Segment:
    """A Parquet segment written and synced, not yet recorded (`DuckDBStore.write_segment`)."""

    seq: int
    path: str  # relative to the store's directory
    min_id: int
    max_id: int
    rows: int


class DuckDBStore:
    """One writer connection (the ingest thread) and a cursor per reader."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        """`threads`: DuckDB's worker threads for this store (default: `THREADS_PER_CORE` for each
        core, as DuckDB counts them for its own default)."""
        self.directory = directory
        self.segment_dir = directory / "events"
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        self.path = directory / "store.duckdb"
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"the store {self.path} is open in another Milepost process; stop it, or run this "
                    "command while that server runs so it goes through its API"
                ) from None
            raise EngineError(f"cannot open the store {self.path}: {exc}") from None
        self._local = threading.local()
        self._mirror: StateMirror | None = None
        self.large_users = LARGE_USERS
        # Checkpoints run inside a COMMIT; at the default 16 MB of WAL they ran every few group
        # commits and were most of the commit time. Fewer, larger checkpoints cost less in total.
        self._con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'").fetchall()
        if not threads:  # DuckDB's own default is one per core
            cores = int(self._con.execute("SELECT current_setting('threads')").fetchall()[0][0])
            threads = THREADS_PER_CORE * cores
        self._con.execute(f"SET threads = {int(threads)}").fetchall()
        # DuckDB draws a progress bar on stdout for a query over 2 s on this connection (not on its
        # cursors), into the server's log: a migration, the first read of the writer's mirror.
        self._con.execute("SET enable_progress_bar = false").fetchall()
        for ddl in duckdb_schema.DDL:
            self._con.execute(ddl).fetchall()
        self._check_version()
        self._next_event_id = (
            self._max(
                "SELECT max(event_id) FROM (SELECT event_id FROM events UNION ALL SELECT event_id FROM events_other)"
            )
            + 1
        )
        self._next_batch_seq = self._max("SELECT max(seq) FROM batches") + 1

    # ---- lifecycle -------------------------------------------------------------------------

    def _check_version(self) -> None:
        row = _first(
            self._con.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()
        )
        if row is None:
            self._con.execute(
                "INSERT INTO store_meta VALUES ('schema_version', ?)", [str(duckdb_schema.SCHEMA_VERSION)]
            ).fetchall()
        elif int(row[0]) > duckdb_schema.SCHEMA_VERSION:
            raise EngineError(
                f"the store {self.path} was written by a newer Milepost (format {row[0]}); upgrade Milepost"
            )
        elif int(row[0]) < duckdb_schema.SCHEMA_VERSION:
            sealed = self._sealed_events()
            steps = [
                sql.format(sealed=sealed)
                for version in range(int(row[0]), duckdb_schema.SCHEMA_VERSION)
                for sql in duckdb_schema.MIGRATIONS[version]
            ]
            self._con.execute(";\n".join(["BEGIN TRANSACTION", *steps, "COMMIT"])).fetchall()
        self._remove_orphan_segments()

    def _max(self, sql: str) -> int:
        row = _first(self._con.execute(sql).fetchall())
        return int(row[0]) if row and row[0] is not None else 0

    def _segment_paths(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT path FROM segments ORDER BY seq").fetchall()]

    def _remove_orphan_segments(self) -> None:
        """A crash between writing a segment file and recording it leaves a file nobody lists."""
        listed = set(self._segment_paths())
        for f in self.segment_dir.iterdir():
            if f"events/{f.name}" not in listed:
                f.unlink()

    def _sealed_events(self) -> str:
        """The rows of the recorded segments as a SQL relation (a migration restores them)."""
        paths = self._segment_paths()
        if not paths:
            return "(FROM events LIMIT 0)"
        files = ", ".join("'" + str(self.directory / p).replace("'", "''") + "'" for p in paths)
        return f"read_parquet([{files}])"

    def close(self) -> None:
        self._con.close()

    def wal_bytes(self) -> int:
        try:
            return self.path.with_name(self.path.name + ".wal").stat().st_size
        except FileNotFoundError:
            return 0

    def checkpoint_ahead(
        self, con: duckdb.DuckDBPyConnection, at_bytes: int = CHECKPOINT_AHEAD_BYTES
    ) -> bool:
        """Checkpoint on `con` (not the writer's) once the WAL holds `at_bytes`; True if it ran."""
        if self.wal_bytes() < at_bytes:
            return False
        con.execute("CHECKPOINT").fetchall()
        return True

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for a component with its own transactions."""
        return self._con.cursor()

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A connection for the calling thread's reads (DuckDB connections are not shared across threads)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
        return cur

    # ---- look-ups for the commit plan (writer thread only) -----------------------------------
    #
    # The plan's look-ups are answered from an in-memory mirror of the key tables, the identity
    # index and the user ids, read once (lazily, so bulk loads before the first commit are seen)
    # and kept exact by `apply`. Each commit is then one call into DuckDB: one script for every
    # write. The Arrow tables reach SQL through DuckDB's replacement scan of the calling frame's
    # locals (the keyword parameters of `_run`).

    def _state(self) -> StateMirror:
        if self._mirror is None:
            con = self._con
            request_before, message_before = self._purged_before()
            self._mirror = StateMirror(
                con.execute(REQUEST_KEYS, {"before": request_before}).fetchall(),
                con.execute(MESSAGE_KEYS, {"before": message_before}).fetchall(),
                con.execute(
                    "SELECT identity_type, value_key, mpid, value, is_device FROM identities"
                ).fetchall(),
                con.execute("SELECT inputs, list(mpid) FROM users GROUP BY inputs").fetchall(),
            )
            # The mirror lives as long as the store and holds every user id. The collector's full
            # passes (every few commits under ingest) would walk that set: a second of CPU at 10 M
            # users, holding the GIL over every thread. Frozen objects are left out of them.
            gc.freeze()
        return self._mirror

    def snapshot(
        self,
        request_keys: set[tuple[int, str]],
        request_since_ms: int,
        message_keys: set[tuple[int, str]],
        message_since_ms: int,
        identity_keys: set[tuple[str, str]],
        mpids: set[int],
    ) -> Snapshot:
        return self._state().snapshot(
            request_keys, request_since_ms, message_keys, message_since_ms, identity_keys, mpids
        )

    @staticmethod
    def _run(
        con: duckdb.DuckDBPyConnection,
        sql: str,
        *,
        t_events: pa.Table | None = None,
        t_other: pa.Table | None = None,
        t_batches: pa.Table | None = None,
        t_users: pa.Table | None = None,
        t_new_users: pa.Table | None = None,
        t_released: pa.Table | None = None,
        t_identities: pa.Table | None = None,
        t_consents: pa.Table | None = None,
        t_devices: pa.Table | None = None,
    ) -> list[Any]:
        """Run `sql` (one statement or a script) seeing the given Arrow tables by their parameter names."""
        return con.execute(sql).fetchall()

    # ---- the one write path ----------------------------------------------------------------

    def apply(self, plan: CommitPlan) -> None:
        con = self._con
        first_event_id, first_seq = self._next_event_id, self._next_batch_seq
        state = self._state()
        try:
            statements, tables = self._write(plan, state)
            self._run(con, ";\n".join(["BEGIN TRANSACTION", *statements, "COMMIT"]), **tables)
        except BaseException:
            self._next_event_id, self._next_batch_seq = first_event_id, first_seq
            self._mirror = None  # read again from what the store holds
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK").fetchall()
            raise
        state.committed(plan)

    def _write(self, plan: CommitPlan, state: StateMirror) -> tuple[list[str], dict[str, pa.Table]]:
        """The statements of one commit and the Arrow tables they read."""
        sql: list[str] = []
        t: dict[str, pa.Table] = {}
        if plan.events:
            t["t_events"] = event_table(plan.events, self._next_event_id)
            sql.append(f"INSERT INTO events SELECT {EVENT_FIELDS} FROM t_events")
            self._next_event_id += t["t_events"].num_rows
        if plan.other_events:
            t["t_other"] = event_table(plan.other_events, self._next_event_id)
            sql.append(
                f"INSERT INTO events_other SELECT {EVENT_FIELDS}, environment, historical FROM t_other"
            )
            self._next_event_id += t["t_other"].num_rows
        if plan.batches:
            t["t_batches"] = batch_table(plan.batches, self._next_batch_seq)
            sql.append("INSERT INTO batches SELECT * FROM t_batches")
            self._next_batch_seq += len(plan.batches)
        # Each statement has a fixed cost of about a millisecond, so a table gets one: a plain append
        # when none of its rows is stored yet (the mirror knows), else an upsert of them all (users in
        # a large store: `_write_users`).
        if plan.users:
            sql += self._write_users(plan, state, t)
        if plan.released_identities:
            released = list(plan.released_identities)
            t["t_released"] = pa.table(
                {"m": pa.array([k[0] for k in released], pa.int64()), "k": [k[1] for k in released]}
            )
            sql.append(
                "DELETE FROM identities WHERE EXISTS (SELECT 1 FROM t_released r "
                "WHERE identities.mpid = r.m AND identities.identity_type = r.k)"
            )
        if plan.identities:
            unchanged, absent = state.identity_changes(plan)
            if len(unchanged) < len(plan.identities):
                t["t_identities"] = identity_table(plan.identities, skip=unchanged)
                all_new = len(absent) + len(unchanged) == len(plan.identities)
                sql.append(
                    "INSERT INTO identities SELECT * FROM t_identities" if all_new else IDENTITIES_UPSERT
                )
        if plan.consents:
            t["t_consents"] = consent_table(plan.consents)
            sql.append(CONSENTS_UPSERT)
        if plan.devices:
            t["t_devices"] = device_table(plan.devices)
            sql.append(DEVICES_UPSERT)
        # The plan's de-duplication keys need no statement: the rows of `batches` and the events
        # written above hold them (duckdb_schema.REQUEST_KEY).
        return sql, t

    def _write_users(self, plan: CommitPlan, state: StateMirror, t: dict[str, pa.Table]) -> list[str]:
        known = [m for m, c in plan.users.items() if not c.is_new]
        if not known:
            t["t_users"] = user_table(plan.users)
            return ["INSERT INTO users SELECT * FROM t_users"]
        # Known users that only were seen again need only their scalar columns updated. In a small
        # store that beats the upsert for a few of them (2 k users, 1 known of 8: 3.1 ms for the
        # append and the update against 4.8 ms), not for hundreds (the update's literal list).
        lists = state.lists_change(plan)
        if len(state.inputs_of) < self.large_users and (lists or len(known) > FEW_KNOWN_USERS):
            t["t_users"] = user_table(plan.users)
            return [USERS_UPSERT]
        sql = []
        if len(known) < len(plan.users):
            t["t_new_users"] = user_table({m: c for m, c in plan.users.items() if c.is_new})
            sql.append("INSERT INTO users SELECT * FROM t_new_users")
        t["t_users"] = user_table({m: plan.users[m] for m in known})
        mpids = ", ".join(map(str, known))
        sql.append(USERS_UPDATE_SEEN.format(mpids=mpids))
        if lists:
            sql.append(USERS_UPDATE_LISTS.format(mpids=mpids))
        return sql

    # ---- maintenance (writer thread) ----------------------------------------------------------

    def seal(self, min_rows: int = 1_000_000) -> int:
        """Copy the events not yet sealed to a new Parquet segment once there are at least `min_rows`;
        return rows sealed.

        The file is written and synced under a temporary name, renamed, and only then recorded, so a
        crash at any point loses nothing. The events stay in `events`: the embedded engine reads
        DuckDB's own storage (ADR 0002), Spark the segments and the tail after them.
        """
        segment = self.write_segment(self._con, min_rows)
        return 0 if segment is None else self.record_segment(segment)

    def write_segment(self, con: duckdb.DuckDBPyConnection, min_rows: int = 1_000_000) -> Segment | None:
        """The first half of `seal`, on any connection: write and sync the Parquet file of the events
        after the last segment (None: fewer than `min_rows`). The server does this beside the writer,
        so ingest goes on."""
        row = _first(
            con.execute(
                f"SELECT count(*), min(event_id), max(event_id) FROM events WHERE event_id > ({sealed_through()})"
            ).fetchall()
        )
        if row is None or row[0] == 0 or row[0] < min_rows:
            return None
        rows, min_id, max_id = int(row[0]), int(row[1]), int(row[2])
        seq = int(con.execute("SELECT coalesce(max(seq), 0) + 1 FROM segments").fetchall()[0][0])
        rel = f"events/segment-{seq:06d}.parquet"
        final = self.directory / rel
        tmp = final.with_suffix(".parquet.tmp")
        con.execute(
            f"COPY (SELECT {EVENT_FIELDS} FROM events WHERE event_id BETWEEN {min_id} AND {max_id} "
            f"ORDER BY mpid, ts) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)"
        ).fetchall()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.rename(final)
        return Segment(seq, rel, min_id, max_id, rows)

    def record_segment(self, segment: Segment) -> int:
        """The second half of `seal`, on the writer's thread: record the written segment; return its
        rows."""
        try:
            self._con.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?)",
                [segment.seq, segment.path, segment.min_id, segment.max_id, segment.rows],
            ).fetchall()
        except BaseException:
            (self.directory / segment.path).unlink(missing_ok=True)
            raise
        return segment.rows

    def _purged_before(self) -> tuple[int, int]:
        """The purge's horizons: keys received at or before them are forgotten (0: none purged)."""
        rows = dict(
            self._con.execute(
                "SELECT key, value FROM store_meta WHERE key IN (?, ?)",
                [duckdb_schema.REQUEST_KEYS_BEFORE, duckdb_schema.MESSAGE_KEYS_BEFORE],
            ).fetchall()
        )
        return (
            int(rows.get(duckdb_schema.REQUEST_KEYS_BEFORE, 0)),
            int(rows.get(duckdb_schema.MESSAGE_KEYS_BEFORE, 0)),
        )

    def purge_dedupe_keys(self, request_before_ms: int, message_before_ms: int) -> None:
        # A horizon never moves back: what a purge forgot stays forgotten, as deleted rows would.
        request_old, message_old = self._purged_before()
        request_before_ms = max(request_before_ms, request_old)
        message_before_ms = max(message_before_ms, message_old)
        con = self._con
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            con.execute(
                "DELETE FROM dedupe_keys WHERE received_at <= CASE kind WHEN ? THEN ? ELSE ? END",
                [duckdb_schema.REQUEST_KEY, request_before_ms, message_before_ms],
            ).fetchall()
            con.execute(
                "INSERT OR REPLACE INTO store_meta VALUES (?, ?), (?, ?)",
                [
                    duckdb_schema.REQUEST_KEYS_BEFORE,
                    str(request_before_ms),
                    duckdb_schema.MESSAGE_KEYS_BEFORE,
                    str(message_before_ms),
                ],
            ).fetchall()
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
        if self._mirror is not None:
            self._mirror.forget_keys(request_before_ms, message_before_ms)

    # ---- reads -------------------------------------------------------------------------------

    def profile(self, mpid: int) -> dict[str, Any] | None:
        cur = self.reader()
        row = _first(
            cur.execute(
                "SELECT mpid, created_at, first_seen, last_seen, inputs, attributes FROM users WHERE mpid = ?",
                [mpid],
            ).fetchall()
        )
        if row is None:
            return None
        identities = cur.execute(
            "SELECT identity_type, value, is_device FROM identities WHERE mpid = ? ORDER BY identity_type",
            [mpid],
        ).fetchall()
        consents = cur.execute(
            "SELECT regulation, purpose, consented, ts, document, location, hardware_id FROM consents "
            "WHERE mpid = ? ORDER BY regulation, purpose",
            [mpid],
        ).fetchall()
        devices = cur.execute(
            "SELECT device_key, platform, os_version, device_model, device_manufacturer, network_carrier, "
            "app_version, device_ids, updated_at FROM devices WHERE mpid = ? ORDER BY updated_at DESC",
            [mpid],
        ).fetchall()
        counts = _first(
            cur.execute(
                "SELECT (SELECT count(*) FROM events WHERE mpid = $m), "
                "(SELECT count(*) FROM events_other WHERE mpid = $m AND environment = 'development'), "
                "(SELECT count(*) FROM events_other WHERE mpid = $m AND historical)",
                {"m": mpid},
            ).fetchall()
        )
        recent = cur.execute(
            "SELECT event_id, event_type, name, action, ts, input_id, data FROM events WHERE mpid = ? "
            "ORDER BY ts DESC, event_id DESC LIMIT 20",
            [mpid],
        ).fetchall()
        return {
            "mpid": int(row[0]),
            "created_at": row[1],
            "first_seen": row[2],
            "last_seen": row[3],
            "input_ids": list(row[4]),
            "attributes": orjson.loads(row[5]),
            "identities": {t: v for t, v, dev in identities if not dev},
            "device_identities": [{"type": t, "value": v} for t, v, dev in identities if dev],
            "consent": _consent_view(consents),
            "devices": [
                {
                    "device_key": d[0],
                    "platform": d[1],
                    "os_version": d[2],
                    "device_model": d[3],
                    "device_manufacturer": d[4],
                    "network_carrier": d[5],
                    "app_version": d[6],
                    "device_ids": orjson.loads(d[7]),
                    "updated_at": d[8],
                }
                for d in devices
            ],
            "event_counts": {
                "realtime": int(counts[0]) if counts else 0,
                "development": int(counts[1]) if counts else 0,
                "historical": int(counts[2]) if counts else 0,
            },
            "recent_events": [
                {
                    "event_id": e[0],
                    "event_type": e[1],
                    "name": e[2],
                    "action": e[3],
                    "timestamp_unixtime_ms": e[4],
                    "input_id": e[5],
                    "data": orjson.loads(e[6]),
                }
                for e in recent
            ],
        }

    def stats(self) -> dict[str, int]:
        cur = self.reader()
        row = _first(
            cur.execute(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events), "
                "(SELECT count(*) FROM events_other), (SELECT count(*) FROM batches)"
            ).fetchall()
        )
        assert row is not None
        size = sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())
        return {
            "users": int(row[0]),
            "events": int(row[1]),
            "other_events": int(row[2]),
            "batches": int(row[3]),
            "store_bytes": size,
        }


def _consent_view(rows: Iterable[tuple[Any, ...]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for regulation, purpose, consented, ts, document, location, hardware_id in rows:
        out.setdefault(regulation, {})[purpose] = {
            "consented": consented,
            "timestamp_unixtime_ms": ts,
            "document": document,
            "location": location,
            "hardware_id": hardware_id,
        }
    return out


def _first(rows: list[Any]) -> Any:
    """The first row or None (DuckDB wants results read to the end before the next statement)."""
    return rows[0] if rows else None
