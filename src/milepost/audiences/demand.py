"""Whether estimates are being asked for: the sample follows ingest in the background only then.

With no estimate for a while, refreshing the sample would copy every sampled user's new events for
nobody (with few users, every event: as much again as ingest writes). The first estimate after such
a quiet spell waits for the sample to catch up instead (`Estimator.journey`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

ACTIVE_S = 600.0  # the sample is kept current this long after the last estimate


class Demand:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: float | None = None  # when the last estimate was asked for

    def ask(self) -> bool:
        """Note an estimate; True when it ends a quiet spell (the sample may be far behind)."""
        now = self._clock()
        quiet = not self._recent(now)
        self._last = now
        return quiet

    def recent(self) -> bool:
        """An estimate was asked for within `ACTIVE_S`."""
        return self._recent(self._clock())

    def _recent(self, now: float) -> bool:
        return self._last is not None and now - self._last < ACTIVE_S
