"""The estimator's view of the sample (`View`), and its file beside the store, so a restart reads it in milliseconds.

Reading the sample's events, users and attribute values out of DuckDB into the columns estimates
run on costs far more than an estimate; this file holds those columns as they were read, in one
Arrow IPC file that is memory-mapped back (no parsing, no copy). It is stamped with exactly what the
sample held when they were read (`Sample.stamp`); a file with another stamp, another format, or that
does not read back whole and consistent is ignored, and the columns are read from the sample again.
It is written off the request path, to a temporary name, synced, then renamed over the old one.

Layout: one record batch of one row; each column a list holding one whole array (so arrays of
different lengths share the file), the stamp and the names in the schema's metadata.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from milepost.audiences.attribute_leaves import PathValues
from milepost.audiences.event_columns import MASKS, NUMBERS, SELECTOR_SQL, EventColumns, restored, stored
from milepost.audiences.masks import Ids, SampleIndex
from milepost.audiences.root_leaves import UserColumns
from milepost.audiences.validity import Instants

FORMAT = 1  # raise when what the file holds, or how, changes
DIRECTORY = "estimator"  # beside the store's database file
NAME = "view.arrow"


@dataclass
class Columns:
    """What a view of one version of the sample reads, as `read` returns it."""

    mpids: Ids
    instants: Ids  # sorted
    users: UserColumns | None
    events: EventColumns | None
    paths: dict[str, PathValues]


@dataclass
class View:
    """What estimates read: one version of the sample, its row order and sizes, and the columns
    read of it so far (what the file holds)."""

    version: int
    index: SampleIndex
    size: int
    population: int
    exact: bool
    instants: Instants = field(default_factory=Instants)  # what time windows compare with `now`
    paths: dict[str, PathValues] = field(default_factory=dict)  # attribute values per path
    events: EventColumns | None = None  # the sample's events as columns, read on first use
    users: UserColumns | None = None  # the sample's users' last seen and inputs, read on first use
    stamp: tuple[Any, ...] | None = None  # what the sample held (`Sample.stamp`) when this was made
    whole: bool = False  # read whole from the sample (a rebuild), not carried from an earlier view

    def persisted(self) -> tuple[Any, ...]:
        """What a file of this view holds."""
        return (self.stamp, self.events is not None, self.users is not None, tuple(sorted(self.paths)))


def location(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The file beside the store `con` is on (None for a store in memory)."""
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    if not rows or not rows[0][0]:
        return None
    return Path(rows[0][0]).parent / DIRECTORY / NAME


def _stamp_text(stamp: tuple[Any, ...]) -> bytes:
    return orjson.dumps([FORMAT, *stamp])


def _one(values: pa.Array) -> pa.Array:
    """`values` as the only row of a list column."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)


def _flag(mask: npt.NDArray[np.bool_]) -> pa.Array:
    return pa.array(np.ascontiguousarray(mask).view(np.uint8))


def write(path: Path, stamp: tuple[Any, ...], cols: Columns) -> None:
    """`cols` to `path`, atomically: a reader finds the old file or the new one, whole."""
    arrays: dict[str, pa.Array] = {
        "mpids": pa.array(cols.mpids, pa.int64()),
        "instants": pa.array(cols.instants, pa.int64()),
    }
    meta: dict[str, Any] = {"paths": list(cols.paths), "inputs": None, "fits": None}
    if cols.users is not None:
        u = cols.users
        arrays["users.last_seen"] = pa.array(u.last_seen, pa.int64())
        arrays["users.seen_known"] = _flag(u.seen_known)
        meta["inputs"] = sorted(u.inputs)
        for i in meta["inputs"]:
            arrays[f"users.input.{i}"] = _flag(u.inputs[i])
    if cols.events is not None:
        rows, columns, values, docs, fits = stored(cols.events)
        meta["fits"] = fits
        # derived columns too, computed here rather than on the first estimate after a restart
        compact = restored(rows, columns, values, docs, fits, cols.events.users)
        meta["amounts_exact"] = compact.amounts_exact
        keys = compact.sequence_keys
        meta["sequence"] = None if keys is None else [keys[1], keys[2]]
        meta["keys_sorted"] = compact.keys_sorted
        if keys is not None:
            arrays["events.sequence_keys"] = pa.array(keys[0], pa.int64())
        arrays["events.rows"] = pa.array(rows.astype(np.int64, copy=False), pa.int64())
        for name in NUMBERS:
            arrays[f"events.{name}"] = pa.array(columns[name], pa.int64())
        for name in MASKS:
            arrays[f"events.{name}"] = _flag(columns[name])
        arrays["events.docs"] = docs
        for c in SELECTOR_SQL:
            arrays[f"events.values.{c}"] = pa.array(values[c], pa.string())
    for i, found in enumerate(cols.paths.values()):
        arrays[f"paths.{i}.codes"] = pa.array(found.codes, pa.int64())
        arrays[f"paths.{i}.values"] = found.values
    table = pa.table({k: _one(v) for k, v in arrays.items()})
    table = table.replace_schema_metadata({"stamp": _stamp_text(stamp), "meta": orjson.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    with contextlib.suppress(OSError):  # the rename itself outlives a crash once the directory is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _header(path: Path) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """(stamp, meta) of the file at `path`; None: no readable file of this format."""
    try:
        with pa.memory_map(str(path)) as source:
            raw = pa.ipc.open_file(source).schema.metadata or {}
        stamp, meta = orjson.loads(raw.get(b"stamp", b"null")), orjson.loads(raw.get(b"meta", b"null"))
    except (OSError, pa.ArrowException, ValueError):
        return None
    if not isinstance(stamp, list) or stamp[:1] != [FORMAT] or not isinstance(meta, dict):
        return None
    return tuple(stamp[1:]), meta


def stamp_of(path: Path) -> tuple[Any, ...] | None:
    """The stamp of the file at `path` (None: no readable file of this format)."""
    header = _header(path)
    return None if header is None else header[0]


def paths_of(path: Path | None) -> list[str]:
    """The attribute paths the file at `path` holds, whatever sample it is of: what estimates read
    before, to read again ahead of them after a rebuild ([]: no readable file of this format)."""
    header = None if path is None else _header(path)
    found = [] if header is None else header[1].get("paths")
    return [str(x) for x in found] if isinstance(found, list) else []


def read(path: Path, stamp: tuple[Any, ...], size: int) -> Columns | None:
    """The columns in the file at `path` when it holds exactly `stamp`'s sample of `size` users and
    reads back whole and consistent; else None (no such file, another stamp, damaged)."""
    try:
        return _read(path, stamp, size)
    except (OSError, pa.ArrowException, ValueError, KeyError, IndexError, TypeError):
        return None


class _Damaged(ValueError):
    """The file does not read back consistent with itself or with the sample's size."""


def _read(path: Path, stamp: tuple[Any, ...], size: int) -> Columns | None:
    source = pa.memory_map(str(path))
    reader = pa.ipc.open_file(source)
    meta_raw = reader.schema.metadata or {}
    if meta_raw.get(b"stamp") != _stamp_text(stamp):
        return None
    meta = orjson.loads(meta_raw[b"meta"])
    table = reader.read_all()
    if table.num_rows != 1:
        raise _Damaged
    table.validate()

    def array(name: str) -> pa.Array:
        column = table.column(name).chunk(0)
        return column.flatten()

    def ints(name: str) -> npt.NDArray[np.int64]:
        return np.asarray(array(name).to_numpy(zero_copy_only=True), dtype=np.int64)

    def flags(name: str, n: int) -> npt.NDArray[np.bool_]:
        found = array(name).to_numpy(zero_copy_only=True).view(np.bool_)
        if found.shape[0] != n:
            raise _Damaged
        return found

    mpids = ints("mpids")
    n = mpids.shape[0]
    if n != size or (n > 1 and not bool((mpids[1:] > mpids[:-1]).all())):
        raise _Damaged
    instants = ints("instants")
    if instants.shape[0] > 1 and not bool((instants[1:] >= instants[:-1]).all()):
        raise _Damaged
    users = None
    if meta["inputs"] is not None:
        last_seen = ints("users.last_seen")
        if last_seen.shape[0] != n:
            raise _Damaged
        inputs = {int(i): flags(f"users.input.{i}", n) for i in meta["inputs"]}
        users = UserColumns(last_seen, flags("users.seen_known", n), inputs)
    events = None
    if meta["fits"] is not None:
        rows = ints("events.rows")
        m = rows.shape[0]
        if m and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise _Damaged
        docs = array("events.docs")
        values = {c: array(f"events.values.{c}").to_pylist() for c in SELECTOR_SQL}
        columns: dict[str, npt.NDArray[Any]] = {}
        for name in NUMBERS:
            columns[name] = ints(f"events.{name}")
            if columns[name].shape[0] != m:
                raise _Damaged
        for name in MASKS:
            columns[name] = flags(f"events.{name}", m)
        _codes_within(columns["doc_codes"], 0, len(docs))
        for c in SELECTOR_SQL:
            _codes_within(columns[c], -1, len(values[c]))
        derived: dict[str, Any] = {"amounts_exact": bool(meta["amounts_exact"])}
        if meta["sequence"] is not None:
            keys = ints("events.sequence_keys")
            if keys.shape[0] != m:
                raise _Damaged
            derived["sequence_keys"] = (keys, int(meta["sequence"][0]), int(meta["sequence"][1]))
            derived["keys_sorted"] = meta.get("keys_sorted") is True
        events = restored(
            rows.astype(np.intp, copy=False), columns, values, docs, bool(meta["fits"]), n, derived
        )
    paths = {}
    for i, name in enumerate(meta["paths"]):
        codes, found = ints(f"paths.{i}.codes"), array(f"paths.{i}.values")
        if codes.shape[0] != n:
            raise _Damaged
        _codes_within(codes, 0, len(found))
        paths[str(name)] = PathValues(codes, found)
    return Columns(mpids, instants, users, events, paths)


def _codes_within(codes: npt.NDArray[np.int64], low: int, high: int) -> None:
    if codes.shape[0] and (int(codes.min()) < low or int(codes.max()) >= high):
        raise _Damaged
