"""The sample's events as NumPy columns, read once and kept current as the sample changes.

The estimator's event criteria (`event_leaves`) run on these columns: user row, time, input, the
selector's columns as codes into their distinct values, flags, amounts as integer nanounits and
attribute documents as codes into the distinct documents. When the sample changes, only the
changed users' events are read again (`update`): appended to the buffers, their earlier rows left
out of the new version's `live` events, so a new version costs what changed, not the whole sample.
`stored` / `restored` give the form the view's file beside the store holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from milepost.audiences.masks import Ids, Mask, SampleIndex

AMOUNT_TYPE = pa.decimal128(38, 9)  # total_amount: an amount is an integer number of nanounits
FLAGS = ("is_install", "is_upgrade")
Codes = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Strings:
    codes: Codes  # per event: position in `values`, -1 for NULL
    values: tuple[str, ...]

    def equal(self, value: str) -> Mask:
        found = [i for i, v in enumerate(self.values) if v == value]  # distinct: one at most
        if not found:
            return np.zeros(len(self.codes), dtype=np.bool_)  # NULL equals nothing either
        return self.codes == found[0]


@dataclass(frozen=True)
class EventColumns:
    """The sample's events of sampled users, one entry per event; events of users read again for a
    later version of the sample stay in place but out of `live`."""

    rows: npt.NDArray[np.intp]  # the user's row in the index
    ts: npt.NDArray[np.int64]
    ts_known: Mask
    input_id: npt.NDArray[np.int64]
    input_known: Mask
    strings: dict[str, Strings]
    flags: dict[str, Mask]  # NULL as false
    doc_codes: Codes  # row of `docs` (row 0: NULL attributes)
    docs: pa.Array  # distinct attribute documents (JSON text)
    amount: npt.NDArray[np.int64]  # total_amount in nanounits, 0 for NULL
    amounts_fit: bool  # every amount fits in int64
    users: int  # rows of the index
    live: Mask | None = None  # the events of this version (None: all of them)
    log: _Log | None = field(default=None, compare=False, repr=False)  # the buffers, to append to
    # events on each set of inputs asked for (a journey's inputs: few), made on first use
    scopes: dict[tuple[int, ...], Mask] = field(default_factory=dict, compare=False, repr=False)
    # events each selector's flag and strings choose (a journey's selectors: few), made on first use
    chosen: dict[tuple[str | None, ...], Mask] = field(default_factory=dict, compare=False, repr=False)
    # events at or before each instant asked for (the latest estimates': few), made on first use
    upto: dict[int, Mask] = field(default_factory=dict, compare=False, repr=False)

    def since(self, start: int) -> EventColumns:
        """The events from `start` on, as columns of their own."""
        return replace(
            self,
            rows=self.rows[start:],
            ts=self.ts[start:],
            ts_known=self.ts_known[start:],
            input_id=self.input_id[start:],
            input_known=self.input_known[start:],
            strings={c: Strings(s.codes[start:], s.values) for c, s in self.strings.items()},
            flags={f: m[start:] for f, m in self.flags.items()},
            doc_codes=self.doc_codes[start:],
            amount=self.amount[start:],
            live=None if self.live is None else self.live[start:],
            log=None,
            scopes={},
            chosen={},
            upto={},
        )

    def alive(self, keep: Mask) -> Mask:
        return keep if self.live is None else keep & self.live

    @cached_property
    def amounts_exact(self) -> bool:
        """Every amount, and every user's sum of them, fits in int64."""
        if not self.amounts_fit:
            return False
        amount, rows = (
            (self.amount, self.rows) if self.live is None else (self.amount[self.live], self.rows[self.live])
        )
        largest = max(int(amount.max(initial=0)), -int(amount.min(initial=0)))
        return largest * int(np.bincount(rows).max(initial=0)) < 2**63  # bounds every partial sum

    @cached_property
    def sequence_keys(self) -> tuple[npt.NDArray[np.int64], int, int] | None:
        """(user row, time) as one sortable key, row * span + time since the earliest event, with that
        time and the span (None: times too spread out for int64 keys)."""
        known_ts = self.ts[self.ts_known]
        base = int(known_ts.min(initial=0))
        span = int(known_ts.max(initial=0)) - base + 1
        if self.users * span >= 2**62:
            return None
        return self.rows.astype(np.int64) * span + np.where(self.ts_known, self.ts - base, 0), base, span

    @cached_property
    def keys_sorted(self) -> bool:
        """The events are in order of their sequence keys (as `stored` writes them)."""
        keys = self.sequence_keys
        return keys is not None and bool((keys[0][1:] >= keys[0][:-1]).all())


SELECTOR_SQL = {
    "event_type": "event_type",
    "name_lc": "name_lc",
    "custom_event_type_lc": "lower(custom_event_type)",
    "action": "action",
}
NUMBERS = ("ts", "input_id", "doc_codes", "amount", *SELECTOR_SQL)  # int64 columns of `_Log`
MASKS = ("ts_known", "input_known", *FLAGS)  # boolean columns of `_Log`
CHANGED_TABLE = "milepost_changed_users"  # the MPIDs `update` reads again (a replacement scan)


def _distinct_values(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    lists = ", ".join(f"list(DISTINCT {e}) FILTER (WHERE {e} IS NOT NULL)" for e in SELECTOR_SQL.values())
    row = con.execute(f"SELECT {lists} FROM sample.events").fetchall()[0]
    return {c: sorted(str(v) for v in (found or [])) for c, found in zip(SELECTOR_SQL, row, strict=True)}


def _ints(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], Mask]:
    known = column.is_valid().to_numpy(zero_copy_only=False)
    values = column.fill_null(0).to_numpy().astype(np.int64)
    return values, np.asarray(known, dtype=np.bool_)


def _nanounits(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], bool]:
    """DECIMAL(38, 9) amounts as int64 nanounits (0 for NULL), and whether every one fits."""
    if column.type != AMOUNT_TYPE:
        return np.zeros(len(column), dtype=np.int64), False
    amounts = column.combine_chunks()
    words = np.frombuffer(amounts.buffers()[1], dtype=np.int64, count=2 * (amounts.offset + len(amounts)))
    low, high = words[2 * amounts.offset :: 2], words[2 * amounts.offset + 1 :: 2]  # little-endian halves
    known = np.asarray(amounts.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    fits = bool(((high == low >> 63) | ~known).all())
    return np.where(known, low, 0), fits


def _common(table: pa.Table) -> tuple[dict[str, npt.NDArray[Any]], bool]:
    """The columns every read of events makes alike (all but selector strings and documents)."""
    ts, ts_known = _ints(table.column("ts"))
    input_id, input_known = _ints(table.column("input_id"))
    amount, fits = _nanounits(table.column("total_amount"))
    columns: dict[str, npt.NDArray[Any]] = {
        "ts": ts,
        "ts_known": ts_known,
        "input_id": input_id,
        "input_known": input_known,
        "amount": amount,
    }
    for f in FLAGS:
        columns[f] = np.asarray(
            table.column(f).fill_null(False).to_numpy(zero_copy_only=False), dtype=np.bool_
        )
    return columns, fits


def load(con: duckdb.DuckDBPyConnection, index: SampleIndex) -> EventColumns:
    """The sample's events as columns; selector strings come as codes into their distinct values
    (-2: a value that arrived after those were read, and then everything is read again)."""
    for _ in range(3):
        values = _distinct_values(con)
        codes = ", ".join(
            f"CASE WHEN {e} IS NULL THEN -1 ELSE coalesce(list_position(${i + 1}, {e}) - 1, -2) END AS {c}"
            for i, (c, e) in enumerate(SELECTOR_SQL.items())
        )
        table = con.sql(
            f"SELECT mpid, ts, input_id, {codes}, is_install, is_upgrade, CAST(attrs AS VARCHAR) AS doc, "
            "total_amount FROM sample.events",
            params=[values[c] for c in SELECTOR_SQL],
        ).to_arrow_table()
        if not any(pc.min(table.column(c)).as_py() == -2 for c in SELECTOR_SQL if table.num_rows):
            break
    else:
        raise RuntimeError("the sample's events kept changing while they were read")
    table, rows = index.held(table)
    columns, fits = _common(table)
    docs = pc.dictionary_encode(table.column("doc").combine_chunks())
    columns["doc_codes"] = docs.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    for c in SELECTOR_SQL:
        columns[c] = table.column(c).to_numpy().astype(np.int64)
    documents = pa.concat_arrays([pa.array([None], docs.dictionary.type), docs.dictionary])
    log = _Log(rows, columns, {c: list(values[c]) for c in SELECTOR_SQL}, documents, fits)
    return log.columns(len(index), None)


class _Log:
    """Event columns in buffers with room to grow. A version of the sample reads a prefix of them,
    so appending the events of the next version leaves the columns earlier versions read as they
    were; selector values and documents only grow, so earlier codes keep their meaning."""

    def __init__(
        self,
        rows: npt.NDArray[np.intp],
        columns: dict[str, npt.NDArray[Any]],
        values: dict[str, list[str]],
        docs: pa.Array,
        fits: bool,
    ) -> None:
        self.n = len(rows)
        self.rows = rows  # no room yet: the first append makes it
        self.buffers = dict(columns)
        self.values = values
        self.lookups = {c: {v: i for i, v in enumerate(found)} for c, found in values.items()}
        self.docs = docs
        self.doc_lookup: dict[str, int] | None = None  # made on the first append
        self.fits = fits

    def columns(self, users: int, live: Mask | None) -> EventColumns:
        n, b = self.n, self.buffers
        return EventColumns(
            rows=self.rows[:n],
            ts=b["ts"][:n],
            ts_known=b["ts_known"][:n],
            input_id=b["input_id"][:n],
            input_known=b["input_known"][:n],
            strings={c: Strings(b[c][:n], tuple(self.values[c])) for c in SELECTOR_SQL},
            flags={f: b[f][:n] for f in FLAGS},
            doc_codes=b["doc_codes"][:n],
            docs=self.docs,
            amount=b["amount"][:n],
            amounts_fit=self.fits,
            users=users,
            live=live,
            log=self,
        )

    def append(self, rows: npt.NDArray[np.intp], columns: dict[str, npt.NDArray[Any]]) -> None:
        n, k = self.n, len(rows)
        if not k:
            return  # buffers may be read-only (a file's): even an empty write is refused
        if n + k > len(self.rows):  # new buffers: the columns read so far keep the old ones
            room = n + k + n // 2 + 1024
            self.rows = _room(self.rows[:n], room)
            self.buffers = {name: _room(v[:n], room) for name, v in self.buffers.items()}
        self.rows[n : n + k] = rows
        for name, v in columns.items():
            self.buffers[name][n : n + k] = v
        self.n = n + k

    def code(self, column: pa.ChunkedArray, c: str) -> Codes:
        """Selector strings as codes into `values[c]` (-1 for NULL); new values are added."""
        encoded = pc.dictionary_encode(column.combine_chunks())
        lookup, values = self.lookups[c], self.values[c]
        found = []
        for v in encoded.dictionary.to_pylist():
            if v not in lookup:
                lookup[v] = len(values)
                values.append(v)
            found.append(lookup[v])
        mapping = np.array([*found, -1], dtype=np.int64)
        return mapping[encoded.indices.fill_null(len(found)).to_numpy(zero_copy_only=False)]

    def doc_codes(self, column: pa.ChunkedArray) -> Codes:
        """Attribute documents as rows of `docs` (0 for NULL); new documents are added."""
        if self.doc_lookup is None:
            self.doc_lookup = {d: i + 1 for i, d in enumerate(self.docs.slice(1).to_pylist())}
        lookup = self.doc_lookup
        encoded = pc.dictionary_encode(column.combine_chunks())
        found: list[int] = []
        new: list[str] = []
        for d in encoded.dictionary.to_pylist():
            if d not in lookup:
                lookup[d] = len(self.docs) + len(new)
                new.append(d)
            found.append(lookup[d])
        if new:
            self.docs = pa.concat_arrays([self.docs, pa.array(new, self.docs.type)])
        mapping = np.array([*found, 0], dtype=np.int64)
        return mapping[encoded.indices.fill_null(len(found)).to_numpy(zero_copy_only=False)]


def _room(values: npt.NDArray[Any], room: int) -> npt.NDArray[Any]:
    out = np.empty(max(room, len(values)), dtype=values.dtype)  # past `len(values)`: never read unwritten
    out[: len(values)] = values
    return out


def update(
    con: duckdb.DuckDBPyConnection, cols: EventColumns, old: SampleIndex, index: SampleIndex, changed: Ids
) -> tuple[EventColumns, EventColumns]:
    """`cols` (over `old`) for the sample's current version (over `index`): the events of the
    `changed` users are read again, every other user's are kept. Exactly what `load` reads when
    only those users changed in the sample since `cols` was read. Also the changed users' events
    alone (over `index` too): what a criterion's members among those users depend on."""
    log = cols.log
    live = cols.live
    if (
        log is None
        or log.n != len(cols.rows)
        or (live is not None and 2 * int(np.count_nonzero(live)) < len(live))
    ):
        log = _compact(cols)  # not the latest columns of their buffers, or mostly stale events
        live = None
    milepost_changed_users = pa.table({"mpid": pa.array(changed, pa.int64())})  # noqa: F841 (CHANGED_TABLE)
    selectors = ", ".join(f"{e} AS {c}" for c, e in SELECTOR_SQL.items())
    table = con.sql(
        f"SELECT mpid, ts, input_id, {selectors}, is_install, is_upgrade, CAST(attrs AS VARCHAR) AS doc, "
        f"total_amount FROM sample.events WHERE mpid IN (SELECT mpid FROM {CHANGED_TABLE})"
    ).to_arrow_table()
    table, rows = index.held(table)
    n, old_rows = log.n, log.rows[: log.n]
    stale = np.zeros(len(old), dtype=np.bool_)
    stale[old.positions(changed)] = True
    if index is not old:  # users' rows move: every event's row is mapped to the new index
        moved = index.positions_of(old.mpids)
        stale |= moved < 0
        log.rows = _room(np.where(moved >= 0, moved, 0)[old_rows], len(log.rows))
    now_live = ~stale[old_rows] if len(old) else np.zeros(n, dtype=np.bool_)
    if live is not None:
        now_live &= live
    columns, fits = _common(table)
    columns["doc_codes"] = log.doc_codes(table.column("doc"))
    for c in SELECTOR_SQL:
        columns[c] = log.code(table.column(c), c)
    log.append(rows, columns)
    log.fits = log.fits and fits
    all_live = np.concatenate([now_live, np.ones(len(rows), dtype=np.bool_)])
    out = log.columns(len(index), None if all_live.all() else all_live)
    return out, out.since(n)


def stored(
    cols: EventColumns,
) -> tuple[npt.NDArray[np.intp], dict[str, npt.NDArray[Any]], dict[str, list[str]], pa.Array, bool]:
    """What `restored` makes `cols`' live events from again: user rows, the `_Log` columns (`NUMBERS`
    and `MASKS`), selector values, documents and whether every amount fits."""
    log = _compact(cols)
    rows, columns = log.rows, log.buffers
    keys = log.columns(cols.users, None).sequence_keys
    if keys is not None:  # in key order: a sequence then reads its events' keys already sorted
        order = np.argsort(keys[0], kind="stable")
        rows, columns = rows[order], {name: v[order] for name, v in columns.items()}
    return rows, columns, log.values, log.docs, log.fits


def restored(
    rows: npt.NDArray[np.intp],
    columns: dict[str, npt.NDArray[Any]],
    values: dict[str, list[str]],
    docs: pa.Array,
    fits: bool,
    users: int,
    derived: dict[str, Any] | None = None,
) -> EventColumns:
    """Event columns from what `stored` returned (arrays used as they are: a later version copies),
    with `derived` the values of their cached properties (`sequence_keys`, `keys_sorted`, `amounts_exact`) when
    already computed over the same events."""
    out = _Log(rows, columns, values, docs, fits).columns(users, None)
    out.__dict__.update(derived or {})  # where `cached_property` keeps them
    return out


def _compact(cols: EventColumns) -> _Log:
    """New buffers holding the live events of `cols` only."""
    keep = cols.live if cols.live is not None else slice(None)
    columns: dict[str, npt.NDArray[Any]] = {
        "ts": cols.ts[keep],
        "ts_known": cols.ts_known[keep],
        "input_id": cols.input_id[keep],
        "input_known": cols.input_known[keep],
        "amount": cols.amount[keep],
        "doc_codes": cols.doc_codes[keep],
        **{c: s.codes[keep] for c, s in cols.strings.items()},
        **{f: m[keep] for f, m in cols.flags.items()},
    }
    values = {c: list(s.values) for c, s in cols.strings.items()}
    return _Log(cols.rows[keep], columns, values, cols.docs, cols.amounts_fit)
