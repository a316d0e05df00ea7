"""When the estimator writes its view of the sample beside the store (`view_file`).

A write copies every column, so it is not made at each change: once the view stays the same for
`PERSIST_SETTLE_S`, at most every `PERSIST_EVERY_S` while it keeps changing (ingest), and at once
when asked (`force`, on close), for the first write of a view read whole (the file being of an
older sample), or when the view holds columns or attribute paths the file of its very sample lacks
(estimates read them; a restart would read them again). A view is known by its key
(`view_file.View.persisted()`): (stamp, has events, has users, attribute paths).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

PERSIST_SETTLE_S = 2.0
PERSIST_EVERY_S = 30.0

Key = tuple[Any, ...]


def _adds_to(key: Key, written: Key | None) -> bool:
    """A view of the very sample the file holds, with columns or attribute paths the file lacks."""
    if written is None or key[0] != written[0]:
        return False
    return (key[1] and not written[1]) or (key[2] and not written[2]) or not set(key[3]) <= set(written[3])


class ViewWrites:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # one write at a time, decided and recorded together
        self.written: Key | None = None  # what the file holds
        self._written_at = -float("inf")  # monotonic seconds
        self._last_seen: Key | None = None  # the view's key at the last call
        self._seen_at = 0.0  # monotonic seconds: when it was first seen

    def opened(self, key: Key) -> None:
        """The file was just read into a view with this key: it holds it."""
        with self._lock:
            self.written = self._last_seen = key

    def write_if_due(self, key: Key, whole: bool, force: bool, write: Callable[[], None]) -> bool:
        """Run `write` (the view with `key` to the file) when due; True when written."""
        with self._lock:
            seen, self._last_seen, now = self._last_seen, key, time.monotonic()
            if key != seen:
                self._seen_at = now
            if key == self.written:
                return False
            settled = key == seen and now - self._seen_at >= PERSIST_SETTLE_S
            rebuilt = whole and (self.written is None or self.written[0] != key[0])
            due = (
                force
                or settled
                or rebuilt
                or _adds_to(key, self.written)
                or now - self._written_at >= PERSIST_EVERY_S
            )
            if not due:
                return False
            write()
            self.written, self._written_at = key, time.monotonic()
            return True
