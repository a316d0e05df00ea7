"""The MPIDs a connection's partner has, in memory, so that a streamed batch asks which of its users
the partner has at a cost in proportion to the batch rather than to the `delivered` table.

A sorted array read once from `delivered`, with the changes acknowledged since kept beside it and
merged in once they are many. The connection's worker is the only writer of its rows, so the
changes it commits are all there is to follow (`state.DeliveryStore` applies them after each commit,
and drops the set when it cannot: a failed commit, a synchronisation written by the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

# Acknowledged changes kept beside the array before they are merged into it (a merge costs a pass
# over the array).
MERGE_AT = 65_536


class DeliveredSet:
    def __init__(self, mpids: npt.ArrayLike) -> None:
        # Unique already (the key of `delivered`): a sort is enough.
        self._base: npt.NDArray[np.int64] = np.sort(np.asarray(mpids, dtype=np.int64))
        self._added: set[int] = set()
        self._removed: set[int] = set()

    def __len__(self) -> int:
        self._merge()
        return len(self._base)

    def among(self, mpids: Sequence[int]) -> set[int]:
        """Which of these MPIDs the partner has."""
        wanted = set(mpids)
        if not wanted:
            return set()
        base = self._base
        found: set[int] = set()
        if len(base):
            q = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
            at = np.minimum(np.searchsorted(base, q), len(base) - 1)
            found = set(q[base[at] == q].tolist())
        if self._removed:
            found -= self._removed
        if self._added:
            found |= wanted & self._added
        return found

    def apply(self, added: Iterable[int], removed: Iterable[int]) -> None:
        """Record a committed change: `removed` left, then `added` joined."""
        for m in removed:
            self._added.discard(m)
            self._removed.add(m)
        for m in added:
            self._removed.discard(m)
            self._added.add(m)
        if len(self._added) + len(self._removed) >= MERGE_AT:
            self._merge()

    def _merge(self) -> None:
        if not self._added and not self._removed:
            return
        base = self._base
        if self._removed:
            gone = np.fromiter(self._removed, dtype=np.int64, count=len(self._removed))
            base = base[~np.isin(base, gone)]
        if self._added:
            new = np.fromiter(self._added, dtype=np.int64, count=len(self._added))
            base = np.union1d(base, new)
        self._base = base
        self._added.clear()
        self._removed.clear()
