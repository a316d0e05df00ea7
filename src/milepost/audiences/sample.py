"""The estimator's sample: a fixed, deterministic subset of users (by a hash of the MPID), materialised.

The sample lives in its own DuckDB schema `sample` with the same tables as the store, so the very
same compiled criteria run on it (the estimator's connection puts `sample` first on its search
path). The sampling rate comes from a ladder (1, 1/2, 1/4, ...) chosen so the sample holds at
least `target` users; a lower rate keeps a subset of the users a higher one kept, so estimates do
not jump when the ladder steps.

A rebuild scans every event. With a `SampleSource` (a distributed engine) that scan runs there,
with the same key (`sample_key` emits one formula in each engine's SQL), and the selected rows
are loaded back here; keeping the sample up to date as users arrive always runs here.

The sample outlives the process: `sample.state` records its threshold, the last batch and event it
holds and a token of its format, written in the same transaction as the sample's tables, so it
never disagrees with them. On start (`start`) a sample whose state matches the store (the token,
the threshold the ladder picks for today's population, the batch it names still in the store) is
adopted and caught up on later batches as by `refresh`; any other is rebuilt.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

import duckdb
import numpy as np
import sqlglot

from milepost.audiences.masks import Ids, as_ids
from milepost.criteria import to_sql
from milepost.criteria.dialect import DUCKDB, Dialect

MODULUS = 1_000_003
PROFILE_TABLES = ("users", "identities", "consents", "devices")
SAMPLE_TABLES = (*PROFILE_TABLES, "events")
LISTED_USERS = 2_000  # up to this many changed users are read from the store by a list of MPIDs
KEPT_CHANGES = 64  # versions whose changed users are remembered (for patching cached results)
# The key, written once and emitted in each engine's SQL, so every engine samples the same users.
KEY_FORMULA = "(((({column} % {m}) + {m}) % {m}) * 7919 + 12345) % {m}"
FORMAT = 1  # raise when what the sample holds, or how it is selected, changes
STATE_COLUMNS = (
    "token VARCHAR, threshold BIGINT, batch_seq BIGINT, batch_mark VARCHAR, event_id BIGINT, users BIGINT"
)


def ladder(population: int, target: int) -> int:
    """The threshold for a population: the highest rate of 1, 1/2, 1/4, ... keeping `target` users."""
    rate = 1.0
    while population * rate / 2 >= target:
        rate /= 2
    return MODULUS if rate >= 1 else int(MODULUS * rate)


def sample_key(column: str, dialect: Dialect = DUCKDB) -> str:
    """A well-spread key in [0, MODULUS) from an MPID column; fits in BIGINT arithmetic."""
    key = sqlglot.parse_one(KEY_FORMULA.format(column=column, m=MODULUS), read=DUCKDB.name)
    return to_sql(key, dialect)


def sampled(threshold: int, dialect: Dialect = DUCKDB, column: str = "mpid") -> str:
    """The condition that keeps a user in a sample of this threshold."""
    return f"{sample_key(column, dialect)} < {int(threshold)}"


# What a stored sample holds, as `sample.state` says: (token, threshold, batch_seq, batch_mark,
# event_id, size).
Stamp = tuple[str, int, int, str, int, int]


class _Outgrown(Exception):
    """The population outgrew the sample's rate: a rebuild picks another."""


class SampleSource(Protocol):
    """Selects the sampled users' rows on another engine; the sample itself stays in the store."""

    def select(
        self, con: duckdb.DuckDBPyConnection, threshold: int, last_event_id: int
    ) -> AbstractContextManager[Mapping[str, str]]:
        """Read within `con`'s current transaction: the rows of every table in `SAMPLE_TABLES`
        whose user is `sampled(threshold)`, events only up to `last_event_id`. Yields, per table,
        a DuckDB-readable Parquet glob of those rows, valid until the context exits."""
        ...


class Sample:
    """The sample; `source`, when set, selects its rows on another engine at each rebuild."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, target: int, source: SampleSource | None = None
    ) -> None:
        self.con = con
        self.target = target
        self.source = source  # None: rebuilt here, from the store's tables
        self.threshold = MODULUS  # keep users whose key is below it
        self.version = 0
        self.size = 0
        self.population = 0
        self._batch_seq = 0
        self._event_id = 0
        self._lock = threading.RLock()
        # version -> the sampled MPIDs that changed to make it (absent: rebuilt, nothing to patch from)
        self.changes: dict[int, Ids] = {}
        # What the stored sample holds; None until started. Unchanged by a refresh that copies nothing.
        self.stamp: Stamp | None = None
        self.adopted: tuple[int, Stamp] | None = None  # (version, stamp)
        con.execute("CREATE SCHEMA IF NOT EXISTS sample").fetchall()

    @property
    def exact(self) -> bool:
        return self.threshold >= MODULUS

    def _count(self, sql: str) -> int:
        return int(self.con.execute(sql).fetchall()[0][0] or 0)

    def _token(self) -> str:
        """The sample's format: its version, key and the columns of the store tables it copies."""
        columns = self.con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            f"AND table_name IN ({', '.join(repr(t) for t in SAMPLE_TABLES)}) "
            "ORDER BY table_name, column_index"
        ).fetchall()
        text = repr((FORMAT, MODULUS, KEY_FORMULA, columns))
        return hashlib.sha256(text.encode()).hexdigest()

    def _batch_mark(self, seq: int) -> str:
        """What identifies batch `seq` of this store (a re-created store reuses the numbers)."""
        row = self.con.execute(
            f"SELECT min(received_at), min(mpid), count(*) FROM main.batches WHERE seq = {int(seq)}"
        ).fetchall()[0]
        return f"{row[0]}:{row[1]}:{row[2]}"

    def start(self) -> bool:
        """Adopt the stored sample when its state matches the store and catch it up; else rebuild.
        True when adopted."""
        with self._lock:
            state = self._stored_state()
            if state is None:
                self.rebuild()
                return False
            token, threshold, batch_seq, mark, event_id, size = state
            self.threshold, self.size = threshold, size
            self.changes.clear()
            self.version += 1
            self.stamp = (token, threshold, batch_seq, mark, event_id, size)
            self.adopted = (self.version, self.stamp)
            self._batch_seq, self._event_id = batch_seq, event_id
            self.refresh()
            return True

    def _stored_state(self) -> Stamp | None:
        """The stamp of the stored sample when it can be adopted; also sets `population`. Read in one
        snapshot, so the state and the tables agree."""
        con = self.con
        tables = ("state", *SAMPLE_TABLES)
        found = self._count(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            f"AND schema_name = 'sample' AND table_name IN ({', '.join(repr(t) for t in tables)})"
        )
        if found != len(tables):
            return None
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            rows = con.execute(
                "SELECT token, threshold, batch_seq, batch_mark, event_id, users FROM sample.state"
            ).fetchall()
            if len(rows) != 1:
                return None
            token, threshold, batch_seq, mark, event_id, users = rows[0]
            self.population = self._count("SELECT count(*) FROM main.users")
            if token != self._token() or threshold != ladder(self.population, self.target):
                return None
            if batch_seq and mark != self._batch_mark(batch_seq):
                return None  # not this store's batch: the store was re-created
            if self.latest_batch(con) <= batch_seq:
                # nothing accepted since: the store holds exactly what the sample was taken from
                newest = self._count(
                    f"SELECT max(event_id) FROM main.events WHERE event_id >= {int(event_id)}"
                )
                if self.population != users or newest != event_id:
                    return None
            size = self._count("SELECT count(*) FROM sample.users")
            return str(token), int(threshold), int(batch_seq), str(mark), int(event_id), size
        finally:
            con.execute("COMMIT").fetchall()

    def _write_state(self, threshold: int, batch_seq: int, event_id: int, users: int) -> tuple[str, str]:
        """Within the transaction writing the sample's tables; returns the token and batch mark."""
        token, mark = self._token(), self._batch_mark(batch_seq)
        self.con.execute(f"CREATE OR REPLACE TABLE sample.state ({STATE_COLUMNS})").fetchall()
        self.con.execute(
            "INSERT INTO sample.state VALUES (?, ?, ?, ?, ?, ?)",
            [token, threshold, batch_seq, mark, event_id, users],
        ).fetchall()
        return token, mark

    def _update_state(self, batch_seq: int, event_id: int, users: int) -> str:
        """Within the transaction bringing the sample's tables up to `batch_seq`; returns its mark."""
        mark = self._batch_mark(batch_seq)
        self.con.execute(
            "UPDATE sample.state SET batch_seq = ?, batch_mark = ?, event_id = ?, users = ?",
            [batch_seq, mark, event_id, users],
        ).fetchall()
        return mark

    def rebuild(self) -> None:
        """Choose the rate for today's population and materialise the sample from scratch."""
        with self._lock:
            con = self.con
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                population = self._count("SELECT count(*) FROM main.users")
                threshold = ladder(population, self.target)
                batch_seq = self._count("SELECT max(seq) FROM main.batches")
                event_id = self._count("SELECT max(event_id) FROM main.events")
                if self.source is None:
                    self._select_here(threshold, event_id)
                else:
                    with self.source.select(con, threshold, event_id) as files:
                        self._load(files)
                token, mark = self._write_state(threshold, batch_seq, event_id, population)
                con.execute("COMMIT").fetchall()
            except BaseException:
                con.execute("ROLLBACK").fetchall()
                raise
            self.population, self.threshold = population, threshold
            self.size = self._count("SELECT count(*) FROM sample.users")
            self.changes.clear()
            self.stamp = (token, threshold, batch_seq, mark, event_id, self.size)
            self.version += 1
            self._batch_seq, self._event_id = batch_seq, event_id  # last, as in `refresh`

    def _select_here(self, threshold: int, event_id: int) -> None:
        keep = sampled(threshold)
        for table in PROFILE_TABLES:
            self.con.execute(
                f"CREATE OR REPLACE TABLE sample.{table} AS SELECT * FROM main.{table} WHERE {keep}"
            ).fetchall()
        self.con.execute(
            "CREATE OR REPLACE TABLE sample.events AS SELECT * FROM main.events "
            f"WHERE {keep} AND event_id <= {event_id}"
        ).fetchall()

    def _load(self, files: Mapping[str, str]) -> None:
        """The sample tables from rows selected elsewhere, with the store's column types."""
        for table in SAMPLE_TABLES:
            path = "'" + files[table].replace("'", "''") + "'"
            self.con.execute(
                f"CREATE OR REPLACE TABLE sample.{table} AS SELECT * FROM main.{table} LIMIT 0"
            ).fetchall()
            self.con.execute(
                f"INSERT INTO sample.{table} BY NAME SELECT * FROM read_parquet({path})"
            ).fetchall()

    def try_refresh(self) -> bool:
        """`refresh` unless another thread is refreshing right now (then its result will do)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self.refresh()
        finally:
            self._lock.release()

    @property
    def batch_seq(self) -> int:
        """The last accepted batch the sample holds (with everything accepted before it)."""
        return self._batch_seq

    def latest_batch(self, con: duckdb.DuckDBPyConnection | None = None) -> int:
        """The last batch accepted so far (only batches past the sample's are read: zone maps skip
        the rest)."""
        seq = self._batch_seq
        sql = f"SELECT coalesce(max(seq), {seq}) FROM main.batches WHERE seq > {seq}"
        return int((con or self.con).execute(sql).fetchall()[0][0])

    def changed_since(self, version: int) -> Ids | None:
        """The sampled users changed between `version` and now, or None when that is not known."""
        if version == self.version:
            return np.zeros(0, dtype=np.int64)
        parts = [self.changes.get(v) for v in range(version + 1, self.version + 1)]
        if any(p is None for p in parts):
            return None
        return np.unique(np.concatenate([p for p in parts if p is not None]))

    def refresh(self) -> bool:
        """Bring the sample up to date with batches accepted since the last refresh; True if it changed."""
        with self._lock:
            con = self.con
            if self.latest_batch(con) <= self._batch_seq:
                return False  # nothing accepted since: the cheap, common case
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                # One snapshot: batches and their events were committed together.
                population = self._count("SELECT count(*) FROM main.users")
                rate = self.threshold / MODULUS
                if population * rate > 4 * self.target or (self.exact and population > 2 * self.target):
                    raise _Outgrown
                top = self.latest_batch(con)
                # only events past the last one taken (ids grow as events commit): zone maps skip the rest
                newest = self._count(
                    f"SELECT coalesce(max(event_id), {self._event_id}) FROM main.events "
                    f"WHERE event_id > {self._event_id}"
                )
                if top <= self._batch_seq:
                    con.execute("COMMIT").fetchall()
                    return False
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE sample_touched AS SELECT DISTINCT mpid FROM main.batches "
                    f"WHERE seq > {self._batch_seq} AND seq <= {top} AND {sampled(self.threshold)}"
                ).fetchall()
                touched = as_ids(con.execute("SELECT mpid FROM sample_touched").fetchnumpy()["mpid"])
                if not touched.shape[0]:
                    # No sampled user changed: nothing to copy, and the stored state may lag (a
                    # restart catches up from it and finds the same: no sampled user changed).
                    con.execute("COMMIT").fetchall()
                    self._batch_seq, self._event_id, self.population = top, newest, population
                    return False
                # a few users: a list of constants, which DuckDB looks up rather than scanning the
                # whole store's table (at 10 M users a scan costs tens of milliseconds per table)
                listed = (
                    ", ".join(str(int(m)) for m in touched)
                    if 0 < touched.shape[0] <= LISTED_USERS
                    else "SELECT mpid FROM sample_touched"
                )
                users = 0  # the sample's size changes by the users inserted less those deleted
                for table in PROFILE_TABLES:
                    deleted = self._count(
                        f"DELETE FROM sample.{table} WHERE mpid IN (SELECT mpid FROM sample_touched)"
                    )
                    inserted = self._count(
                        f"INSERT INTO sample.{table} SELECT * FROM main.{table} WHERE mpid IN ({listed})"
                    )
                    if table == "users":
                        users = inserted - deleted
                con.execute(
                    f"INSERT INTO sample.events SELECT * FROM main.events WHERE event_id > {self._event_id} "
                    f"AND event_id <= {newest} AND mpid IN (SELECT mpid FROM sample_touched)"
                ).fetchall()
                mark = self._update_state(top, newest, population)
                con.execute("COMMIT").fetchall()
            except _Outgrown:
                con.execute("ROLLBACK").fetchall()  # nothing written yet
                self.rebuild()
                return True
            except BaseException:
                con.execute("ROLLBACK").fetchall()
                raise
            self.population = population
            self.size += users
            if self.stamp is not None:
                self.stamp = (self.stamp[0], self.threshold, top, mark, newest, self.size)
            self.changes[self.version + 1] = touched
            self.changes.pop(self.version + 1 - KEPT_CHANGES, None)
            self.version += 1
            self._batch_seq, self._event_id = top, newest  # last: a version holding it is out first
            return True
