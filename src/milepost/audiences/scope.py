"""A scoped evaluation's copies: its candidates' rows of the store's tables, in temporary tables
of the engine's connection, so that every query of the evaluation reads a few thousand rows
instead of filtering the whole store again per sibling group.

Statements are held on the engine's `Script` and run with its next read; the Arrow tables they
read stay registered until the evaluation's `registered` stack closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import duckdb
import pyarrow as pa

from milepost.audiences.plan_sql import SCOPED_TABLES
from milepost.audiences.statements import Script
from milepost.audiences.user_events import UserEvents


class ScopeCopies:
    """The copies on one connection, whose store is attached as `db`."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, script: Script, db: str, user_events: UserEvents
    ) -> None:
        self.con = con
        self.script = script
        self.db = db
        self.user_events = user_events  # where the candidates' events come from, once read
        self._event_fields: tuple[str, ...] | None = None  # the events table's columns

    def copy(
        self,
        tables: frozenset[str],
        named: frozenset[str] | None,
        span: tuple[int, int] | None,
        candidates: Sequence[int],
        registered: contextlib.ExitStack,
    ) -> list[str]:
        """Copy the candidates' rows of `tables` (of `events`, the columns `named`; None: whole
        rows), and their memberships; which copies were made.

        The steps update the memberships copy, and the engine applies the net change, deleting the
        removed rows by the row ids kept in `eval_stored` (a delete matched on (audience, user)
        scanned the whole table). `span`: an mpid range holding every candidate."""
        within = "" if span is None else f"mpid BETWEEN {int(span[0])} AND {int(span[1])} AND "
        scope = f"WHERE {within}mpid IN (SELECT mpid FROM eval_candidates)"
        copies = [t for t in SCOPED_TABLES if t in tables]
        for table in copies:
            if table == "events":
                self._copy_events(self.event_columns(named), scope, candidates, registered)
            else:
                self.script.later(
                    f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {self.db}.main.{table} {scope}"
                )
        self.script.later(
            "CREATE OR REPLACE TEMP TABLE eval_stored AS SELECT rowid AS stored_row, audience_id, mpid, "
            f"entered_at FROM {self.db}.main.memberships {scope}",
            "CREATE OR REPLACE TEMP TABLE memberships AS SELECT audience_id, mpid, entered_at FROM eval_stored",
        )
        return [*copies, "memberships", "eval_stored"]

    def _copy_events(
        self, columns: str, scope: str, candidates: Sequence[int], registered: contextlib.ExitStack
    ) -> None:
        """From the events held by user (ADR 0007) and the store's newest, or, until those are
        read, by a scan of the store."""
        stored = self.user_events.stored
        by_user = self.user_events.get(columns, self.script.run)
        if by_user is None:
            self.script.later(
                f"CREATE OR REPLACE TEMP TABLE events AS SELECT {columns} FROM {stored} {scope}"
            )
            return
        registered.enter_context(self.registered("t_user_events", by_user.take(candidates)))
        # DuckDB reads only the newest row groups for the rest: it skips the others by event_id.
        self.script.later(
            f"CREATE OR REPLACE TEMP TABLE events AS SELECT {columns} FROM {stored} LIMIT 0",
            "INSERT INTO events SELECT * FROM t_user_events",
            f"INSERT INTO events SELECT {columns} FROM {stored} "
            f"WHERE event_id > {by_user.through} AND mpid IN (SELECT mpid FROM eval_candidates)",
        )

    def event_columns(self, named: frozenset[str] | None) -> str:
        """The events columns a copy needs: those the queries name (None: every column), and what
        timers read; decoding the others (JSON payloads) was most of the copy's cost."""
        if named is None:
            return "*"
        if self._event_fields is None:
            self._event_fields = tuple(
                str(r[0])
                for r in self.script.run(
                    f"SELECT column_name FROM (DESCRIBE SELECT * FROM {self.db}.main.events)"
                )
            )
        keep = [c for c in self._event_fields if c.lower() in named or c.lower() in ("mpid", "ts")]
        return ", ".join(f'"{c}"' for c in keep)

    def drop(self, tables: Sequence[str] = (*SCOPED_TABLES, "memberships")) -> None:
        """Drop the copies of these tables (held)."""
        self.script.later(*(f"DROP TABLE IF EXISTS temp.main.{table}" for table in tables))

    @contextlib.contextmanager
    def registered(self, name: str, table: pa.Table) -> Iterator[None]:
        """`table` readable as `name` in the block (whose statements must run in it)."""
        self.con.register(name, table)
        try:
            yield
        finally:
            self.con.unregister(name)

    @contextlib.contextmanager
    def filled(self, table: str, mpids: Sequence[int], create: bool = False) -> Iterator[None]:
        """Hold the statements that put `mpids` in `table` (`create`: a new temporary table); the
        block must run them (`Script.run`) while it holds the list."""
        with self.registered("t_fill", pa.table({"mpid": pa.array(list(mpids), pa.int64())})):
            if create:
                self.script.later(f"CREATE OR REPLACE TEMP TABLE {table} (mpid BIGINT)")
            self.script.later(f"INSERT INTO {table} SELECT DISTINCT mpid FROM t_fill")
            yield
