"""A journey root (users seen within the profile lifetime, on the journey's inputs) in NumPy.

The root is in every estimate of a journey; its compiled query scans the sample's users and
fetches tens of thousands of MPIDs to map back to rows. Here the sampled users' `last_seen` and
`inputs` are read once per sample version, in the sample's row order, and the root at any instant
is a comparison and a lookup, the same as
`last_seen IS NOT NULL AND last_seen > now - lifetime AND list_has_any(inputs, [ids])`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from milepost.audiences.masks import Mask, SampleIndex, as_ids


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
    mpids = as_ids(table.column("mpid").fill_null(0).to_numpy())
    pos = np.searchsorted(index.mpids, mpids)
    pos[pos >= size] = 0
    held = index.mpids[pos] == mpids if size else np.zeros(len(mpids), dtype=np.bool_)
    table, rows = table.filter(pa.array(held)), pos[held]
    last_seen = np.zeros(size, dtype=np.int64)
    known = np.zeros(size, dtype=np.bool_)
    seen = table.column("last_seen")
    last_seen[rows] = seen.fill_null(0).to_numpy()
    known[rows] = np.asarray(seen.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    lists = table.column("inputs").combine_chunks()
    values = pc.list_flatten(lists)
    owners = rows[pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)]
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    ids = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    inputs: dict[int, Mask] = {}
    for i in np.unique(ids[valid]):
        mask = np.zeros(size, dtype=np.bool_)
        mask[owners[valid & (ids == i)]] = True
        inputs[int(i)] = mask
    return UserColumns(last_seen, known, inputs)
