"""Sets of sampled users as NumPy boolean masks over a fixed order of the sample.

Row i of every mask built from one `SampleIndex` stands for `index.mpids[i]`, so the estimator's
set algebra (all, any, not, parent ∧ criterion ∧ ¬earlier siblings) is element-wise vector work
and a count is `np.count_nonzero`, whatever the number of sampled users.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

Mask = npt.NDArray[np.bool_]
Ids = npt.NDArray[np.int64]


def as_ids(values: Any) -> Ids:
    """MPIDs fetched from DuckDB (`fetchnumpy()` column) as a plain int64 array."""
    arr = np.ma.getdata(values) if isinstance(values, np.ma.MaskedArray) else values
    return np.asarray(arr, dtype=np.int64)


class SampleIndex:
    """The sampled MPIDs in ascending order: the row order of every mask."""

    def __init__(self, mpids: Ids) -> None:
        ordered = mpids.shape[0] < 2 or bool((mpids[1:] > mpids[:-1]).all())
        self.mpids: Ids = mpids if ordered else np.unique(mpids)  # sorted, each once

    def __len__(self) -> int:
        return int(self.mpids.shape[0])

    def everyone(self) -> Mask:
        return np.ones(len(self), dtype=np.bool_)

    def nobody(self) -> Mask:
        return np.zeros(len(self), dtype=np.bool_)

    def positions(self, mpids: Ids) -> npt.NDArray[np.intp]:
        """Rows of the given MPIDs; MPIDs outside the sample are left out."""
        pos = self.positions_of(mpids)
        return pos[pos >= 0]

    def positions_of(self, mpids: Ids) -> npt.NDArray[np.intp]:
        """The row of each given MPID, -1 for MPIDs outside the sample."""
        if len(self) == 0:
            return np.full(mpids.shape[0], -1, dtype=np.intp)
        if 2 * mpids.shape[0] > len(self):  # many lookups (a table's rows): hashing the index costs less
            found = pc.index_in(pa.array(mpids, pa.int64()), value_set=self._arrow)
            return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)
        pos = np.searchsorted(self.mpids, mpids)
        pos[pos >= len(self)] = 0
        return np.where(self.mpids[pos] == mpids, pos, -1)

    @cached_property
    def _arrow(self) -> pa.Array:
        return pa.array(self.mpids, pa.int64())

    def held(self, table: pa.Table) -> tuple[pa.Table, npt.NDArray[np.intp]]:
        """The rows of `table` whose `mpid` the sample holds, and their users' rows here."""
        pos = self.positions_of(as_ids(table.column("mpid").fill_null(0).to_numpy()))
        keep = pos >= 0
        if keep.all():  # the common case: nothing to filter out
            return table, pos
        return table.filter(pa.array(keep)), pos[keep]

    def with_users(self, changed: Ids, present: Ids) -> SampleIndex:
        """This index once the `changed` users are the `present` ones (the others left the sample);
        itself when that adds and removes no one."""
        gone = np.setdiff1d(changed, present)
        if self.positions(gone).shape[0] == 0 and self.positions(present).shape[0] == present.shape[0]:
            return self
        kept = self.mpids[~np.isin(self.mpids, changed)]
        return SampleIndex(np.concatenate([kept, present]))

    def mask(self, mpids: Ids) -> Mask:
        out = self.nobody()
        out[self.positions(mpids)] = True
        return out

    def members(self, mask: Mask) -> Ids:
        return self.mpids[mask]

    def carry(self, mask: Mask, old: SampleIndex) -> Mask:
        """A mask over `old` re-aligned to this index (users new to the sample are not members)."""
        return self.mask(old.mpids[mask])


def count(mask: Mask) -> int:
    return int(np.count_nonzero(mask))
