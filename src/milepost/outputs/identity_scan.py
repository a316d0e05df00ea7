"""The connections' scans for changed identities, shared.

Each streaming connection looks for users whose identities changed about once a second (see
`ConnectionWorker._identity_batch`), and every look is a query over the identities written in its
window (about 2 ms of CPU). The windows of all connections end at the same point for a scan
interval, so connections whose scans stand at the same place ask the same question: the first asks
the store, the others are given its answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milepost.outputs.state import DeliveryStore

IDENTITY_LAG_MS = 2_000  # identities written less than this ago are left for the next scan (commit order)
KEPT = 64  # answers kept (the connections' scans stand at a few places at most)


class IdentityScans:
    def __init__(self, interval_s: float) -> None:
        self.interval_ms = interval_s * 1000
        self._lock = threading.Lock()
        self._upto: int | None = None
        self._answers: OrderedDict[tuple[tuple[int, int], int, int], list[tuple[int, int]]] = OrderedDict()

    def upto(self, now_ms: int) -> int:
        """Where a scan at `now_ms` ends: identities written up to this are settled. Moved once per
        scan interval, so that the scans of that interval end at the same point."""
        latest = now_ms - IDENTITY_LAG_MS
        with self._lock:
            if self._upto is None or not 0 <= latest - self._upto < self.interval_ms:
                self._upto = latest
            return self._upto

    def touched(
        self, store: DeliveryStore, after: tuple[int, int], upto: int, limit: int
    ) -> list[tuple[int, int]]:
        """`store.identities_touched(after, upto, limit)`, asked of the store once."""
        key = (after, upto, limit)
        with self._lock:
            found = self._answers.get(key)
        if found is None:
            found = store.identities_touched(after, upto, limit)
            with self._lock:
                self._answers[key] = found
                while len(self._answers) > KEPT:
                    self._answers.popitem(last=False)
        return found
