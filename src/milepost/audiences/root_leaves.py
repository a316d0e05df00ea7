"""A journey root (users seen within the profile lifetime, on the journey's inputs) in NumPy.

The root is in every estimate of a journey; its compiled query scans the sample's users and
fetches tens of thousands of MPIDs to map back to rows. Here the sampled users' `last_seen` and
`inputs` are read once, in the sample's row order (then per sample version only the changed users'
rows, `update`), and the root at any instant
is a comparison and a lookup, the same as
`last_seen IS NOT NULL AND last_seen > now - lifetime AND list_has_any(inputs, [ids])`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from milepost.audiences.masks import Ids, Mask, SampleIndex


@dataclass(frozen=True)
class UserColumns:
    """The sampled users, one entry per row of the index."""

    last_seen: npt.NDArray[np.int64]
    seen_known: Mask
    inputs: dict[int, Mask]  # per input id, the users whose `inputs` hold it

    def root(self, input_ids: tuple[int, ...], now_ms: int, lifetime_ms: int) -> Mask:
        on_inputs = np.zeros(len(self.last_seen), dtype=np.bool_)
        for i in set(input_ids):
            found = self.inputs.get(int(i))
            if found is not None:
                on_inputs |= found
        return on_inputs & self.seen_known & (self.last_seen > now_ms - lifetime_ms)


def load(con: duckdb.DuckDBPyConnection, index: SampleIndex) -> UserColumns:
    """The sampled users' columns; users the index does not hold (the sample moved on since it was
    made) are left out, and users it holds that are gone are nobody's members, as when the root's
    query is fetched and mapped to the index."""
    table = con.sql("SELECT mpid, last_seen, inputs FROM sample.users").to_arrow_table()
    size = len(index)
    out = UserColumns(np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.bool_), {})
    _fill(out, index, table)
    return out


def _fill(out: UserColumns, index: SampleIndex, table: pa.Table) -> None:
    """`out`'s rows of the users in `table` (mpid, last_seen, inputs) set from it."""
    size = len(index)
    table, rows = index.held(table)
    seen = table.column("last_seen")
    out.last_seen[rows] = seen.fill_null(0).to_numpy()
    out.seen_known[rows] = np.asarray(seen.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    lists = table.column("inputs").combine_chunks()
    values = pc.list_flatten(lists)
    owners = rows[pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)]
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    ids = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    for i in np.unique(ids[valid]):
        mask = out.inputs.get(int(i))
        if mask is None:
            mask = out.inputs[int(i)] = np.zeros(size, dtype=np.bool_)
        mask[owners[valid & (ids == i)]] = True


def update(
    cols: UserColumns, old: SampleIndex, index: SampleIndex, changed: Ids, table: pa.Table
) -> UserColumns:
    """`cols` (over `old`) for the sample's current version (over `index`), where only the `changed`
    users differ and `table` (mpid, last_seen, inputs) holds those of them still sampled."""
    if index is old:
        out = UserColumns(
            cols.last_seen.copy(), cols.seen_known.copy(), {i: m.copy() for i, m in cols.inputs.items()}
        )
    else:
        moved = index.positions_of(old.mpids)
        kept, to = moved >= 0, moved[moved >= 0]

        def carry(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.zeros(len(index), dtype=values.dtype)
            out[to] = values[kept]
            return out

        out = UserColumns(
            carry(cols.last_seen), carry(cols.seen_known), {i: carry(m) for i, m in cols.inputs.items()}
        )
    rows = index.positions(changed)
    out.last_seen[rows] = 0
    out.seen_known[rows] = False
    for mask in out.inputs.values():
        mask[rows] = False
    _fill(out, index, table)
    return out
