"""The store's events clustered by user, in memory: what a real-time evaluation copies for its
candidates (ADR 0007).

DuckDB has no fetch by key: a semi-join on `mpid` reads every row group of `events`, and a few
thousand random users have rows in all of them. Here the rows are kept in runs sorted by MPID, and
a user's rows are found by binary search in each run (`EventsByUser`). They hold the events up to
an `event_id` (the writer numbers events in commit order, so every event up to the largest visible
one is visible); the evaluation reads those after it from the store, and when there are enough of
them they join the runs (`UserEvents`).

Runs are merged size-tiered (each more than twice the next), so there are O(log n) of them and
each row is re-sorted O(log n) times. An evaluation merges runs up to a size; larger merges are
left to a fresh read beside the evaluations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from milepost.priority import named_thread, run_in_background

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserEventsSettings:
    # Smaller stores are scanned: a scan of 2 M events costs a few ms (10 M held take 480 MB).
    min_events: int = 2_000_000
    # How many of the newest events are read from the store before they join the runs, and how
    # many evaluations apart that is checked (a count: one more call into DuckDB).
    tail_rows: int = 100_000
    check_every: int = 8
    # The largest run an evaluation merges (1 M rows: about 0.3 s). Beyond it runs pile up, and
    # past `max_runs` of them the events are read again beside the evaluations, as at the start.
    merge_rows: int = 1_000_000
    max_runs: int = 8
    # Build in the evaluation that asks (tests) instead of beside the evaluations.
    wait: bool = False


class UserEvents:
    """The events held by user for one connection's evaluations, with the columns they ask for.

    The first evaluation that asks (or asks for other columns) starts reading them in a thread of
    its own and is told to scan the store; the later ones get them once read. At 10 M events that
    read and sort take about 5 s of CPU.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, stored: str, settings: UserEventsSettings) -> None:
        self.con = con
        self.stored = stored  # the events table, qualified
        self.settings = settings
        self._held: EventsByUser | None = None
        self._building: str | None = None  # the columns being read
        self._calls = 0

    def get(self, columns: str, run: Callable[[str], list[Any]]) -> EventsByUser | None:
        """The events held with `columns`, with the newest joined when there are enough; None: scan.
        `run`: how to run a statement in the evaluation (after those it holds)."""
        if columns == "*":  # whole rows carry the raw payloads: too large to hold
            return None
        due = self._calls % self.settings.check_every == 0
        self._calls += 1
        held = self._held
        if held is not None and held.columns == columns:
            if due:
                self._take_in_newest(held, run)
            return held
        if due and self._building != columns and self._large(run):
            self._start(columns)
            held = self._held  # when built here (`wait`)
            return held if held is not None and held.columns == columns else None
        return None

    def _large(self, run: Callable[[str], list[Any]]) -> bool:
        return int(run(f"SELECT count(*) FROM {self.stored}")[0][0]) >= self.settings.min_events

    def _take_in_newest(self, held: EventsByUser, run: Callable[[str], list[Any]]) -> None:
        # Only the newest row groups are read: DuckDB skips the others by their event_id range.
        newest = f"event_id > {held.through}"
        n, top = run(f"SELECT count(*), coalesce(max(event_id), 0) FROM {self.stored} WHERE {newest}")[0]
        if int(n) < self.settings.tail_rows:
            return
        rows = self._read(self.con, held.columns, f"{newest} AND event_id <= {int(top)}")
        held.absorb(rows, int(top), merge_rows=self.settings.merge_rows)
        if len(held.runs) > self.settings.max_runs and self._building is None:
            self._start(held.columns)  # the held runs serve until the new ones are read

    def _start(self, columns: str) -> None:
        self._building = columns
        cursor = self.con.cursor()
        if self.settings.wait:
            self._build(cursor, columns)
            return
        named_thread(self._build, "milepost-events-by-user", (cursor, columns, True)).start()

    def _build(self, cursor: duckdb.DuckDBPyConnection, columns: str, background: bool = False) -> None:
        try:
            if background:
                run_in_background()
            through = int(
                cursor.execute(f"SELECT coalesce(max(event_id), 0) FROM {self.stored}").fetchall()[0][0]
            )
            held = EventsByUser(columns, self._read(cursor, columns, f"event_id <= {through}"), through)
            if self._building == columns:
                self._held = held
            # The read and the sort needed twice the memory now held: give the rest back (400-500 MB
            # at 10 M events), or the process keeps it.
            pa.default_memory_pool().release_unused()
        except Exception:  # the store closed, or memory ran out: evaluations keep scanning
            log.warning("could not hold the events by user", exc_info=True)
        finally:
            if self._building == columns:
                self._building = None
            cursor.close()

    def _read(self, con: duckdb.DuckDBPyConnection, columns: str, where: str) -> pa.Table:
        return con.sql(f"SELECT {columns} FROM {self.stored} WHERE {where}").to_arrow_table()


class EventsByUser:
    """Events through `through`, with `columns`, findable by MPID (the column `mpid`)."""

    def __init__(self, columns: str, table: pa.Table, through: int) -> None:
        self.columns = columns  # the SQL select list the rows were read with
        self.through = through
        self._runs: list[Run] = []
        self._add(table)

    @property
    def rows(self) -> int:
        return sum(run.rows.num_rows for run in self._runs)

    @property
    def runs(self) -> list[int]:
        """How many rows each run holds, the oldest first."""
        return [run.rows.num_rows for run in self._runs]

    def absorb(self, table: pa.Table, through: int, merge_rows: int | None = None) -> None:
        """Hold also `table`: the events after `self.through` up to `through`. No merge makes a
        run of more than `merge_rows` (None: no limit)."""
        if through <= self.through:
            raise ValueError(f"events through {through} are not after {self.through}")
        self._add(table)
        self.through = through
        while len(self._runs) > 1:
            older, newer_rows = self._runs[-2].rows.num_rows, self._runs[-1].rows.num_rows
            if older > 2 * newer_rows or (merge_rows is not None and older + newer_rows > merge_rows):
                break
            newer = self._runs.pop()
            self._runs[-1] = self._runs[-1].merged(newer)

    def take(self, mpids: Sequence[int] | np.ndarray) -> pa.Table:
        """The rows of these users (each MPID once), in no particular order."""
        keys = np.unique(np.asarray(mpids, dtype=np.int64))
        parts = [run.rows.take(run.positions(keys)) for run in self._runs]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def _add(self, table: pa.Table) -> None:
        table = _compact(table)
        if self._runs and table.schema != self._runs[0].rows.schema:  # e.g. a run of no rows read as nulls
            table = table.cast(self._runs[0].rows.schema)
        mpids = _mpids(table)
        if not (mpids[1:] >= mpids[:-1]).all():
            table = table.take(np.argsort(mpids, kind="stable"))
        if not self._runs or table.num_rows:
            self._runs.append(Run(table))


class Run:
    """Rows sorted by MPID, found by user: each distinct MPID once, and where its rows start.

    Searching the distinct users (a tenth as many as rows at 10 events each) once per user, instead
    of every row twice: taking 5,000 users' rows among 10 M took 3.8-4.2 ms instead of 7.6
    (`benchmarks/evaluation.py`), and under load 35 ms instead of 41-48."""

    def __init__(self, rows: pa.Table) -> None:
        self.rows = rows
        mpids = _mpids(rows)  # sorted: a user's rows start at the first row, and where the MPID changes
        first = np.flatnonzero(np.concatenate(([len(mpids) > 0], mpids[1:] != mpids[:-1])))
        self.users = mpids[first]
        self.starts = np.append(first, rows.num_rows)  # user i's rows: starts[i] .. starts[i + 1] - 1

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """The positions of every row of `keys` (sorted, distinct)."""
        if not len(self.users):
            return np.empty(0, dtype=np.int64)
        at = np.searchsorted(self.users, keys)
        at[at == len(self.users)] = 0
        at = at[self.users[at] == keys]  # the keys this run holds
        first = self.starts[at]
        counts = self.starts[at + 1] - first
        # Each user's positions are first .. first + count - 1: one arange, shifted per user.
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        return np.arange(total, dtype=np.int64) + np.repeat(first - (ends - counts), counts)

    def merged(self, newer: Run) -> Run:
        """This run and a newer one as one, in MPID order; a user's older rows first."""
        a, b = _mpids(self.rows), _mpids(newer.rows)
        # Where each of b's rows lands: after a's rows with the same or a smaller MPID.
        at_b = np.searchsorted(a, b, "right") + np.arange(len(b))
        order = np.empty(len(a) + len(b), dtype=np.int64)
        in_b = np.zeros(len(order), dtype=bool)
        in_b[at_b] = True
        order[~in_b] = np.arange(len(a))
        order[at_b] = np.arange(len(a), len(order))
        return Run(
            pa.concat_tables([self.rows, newer.rows]).unify_dictionaries().combine_chunks().take(order)
        )


def _mpids(table: pa.Table) -> np.ndarray:
    """The `mpid` column as an array (without a copy: the tables held are in one chunk)."""
    return table.column("mpid").to_numpy()


def _compact(table: pa.Table) -> pa.Table:
    """`table` in one chunk (a take across chunks costs more), its text columns as dictionaries:
    event types and names repeat, and so take a third less memory and are quicker to take."""
    columns = [
        pc.dictionary_encode(column) if pa.types.is_string(column.type) else column
        for column in table.columns
    ]
    return pa.table(columns, names=table.column_names).unify_dictionaries().combine_chunks()
