"""The estimator's sample: a fixed, deterministic subset of users (by a hash of the MPID), materialised.

The sample lives in its own DuckDB schema `sample` with the same tables as the store, so the very
same compiled criteria run on it (the estimator's connection puts `sample` first on its search
path). The sampling rate comes from a ladder (1, 1/2, 1/4, ...) chosen so the sample holds at
least `target` users; a lower rate keeps a subset of the users a higher one kept, so estimates do
not jump when the ladder steps.

A rebuild scans every event. With a `SampleSource` (a distributed engine) that scan runs there,
with the same key (`sample_key` emits one formula in each engine's SQL), and the selected rows
are loaded back here; keeping the sample up to date as users arrive always runs here.
"""

from __future__ import annotations

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


def sample_key(column: str, dialect: Dialect = DUCKDB) -> str:
    """A well-spread key in [0, MODULUS) from an MPID column; fits in BIGINT arithmetic."""
    key = sqlglot.parse_one(KEY_FORMULA.format(column=column, m=MODULUS), read=DUCKDB.name)
    return to_sql(key, dialect)


def sampled(threshold: int, dialect: Dialect = DUCKDB, column: str = "mpid") -> str:
    """The condition that keeps a user in a sample of this threshold."""
    return f"{sample_key(column, dialect)} < {int(threshold)}"


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
        con.execute("CREATE SCHEMA IF NOT EXISTS sample").fetchall()

    @property
    def exact(self) -> bool:
        return self.threshold >= MODULUS

    def _count(self, sql: str) -> int:
        return int(self.con.execute(sql).fetchall()[0][0] or 0)

    def rebuild(self) -> None:
        """Choose the rate for today's population and materialise the sample from scratch."""
        with self._lock:
            con = self.con
            self.population = self._count("SELECT count(*) FROM main.users")
            rate = 1.0
            while self.population * rate / 2 >= self.target:
                rate /= 2
            threshold = MODULUS if rate >= 1 else int(MODULUS * rate)
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                batch_seq = self._count("SELECT max(seq) FROM main.batches")
                event_id = self._count("SELECT max(event_id) FROM main.events")
                if self.source is None:
                    self._select_here(threshold, event_id)
                else:
                    with self.source.select(con, threshold, event_id) as files:
                        self._load(files)
                con.execute("COMMIT").fetchall()
            except BaseException:
                con.execute("ROLLBACK").fetchall()
                raise
            self.threshold = threshold
            self.size = self._count("SELECT count(*) FROM sample.users")
            self.changes.clear()
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
            population = self._count("SELECT count(*) FROM main.users")
            rate = self.threshold / MODULUS
            if population * rate > 4 * self.target or (self.exact and population > 2 * self.target):
                self.rebuild()
                return True
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                # One snapshot: batches and their events were committed together.
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
                if not touched.shape[0]:  # no sampled user changed: nothing to copy
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
                con.execute("COMMIT").fetchall()
            except BaseException:
                con.execute("ROLLBACK").fetchall()
                raise
            self.population = population
            self.size += users
            self.changes[self.version + 1] = touched
            self.changes.pop(self.version + 1 - KEPT_CHANGES, None)
            self.version += 1
            self._batch_seq, self._event_id = top, newest  # last: a version holding it is out first
            return True
