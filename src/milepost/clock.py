"""Time is an input: every component takes a Clock, and tests move a ManualClock instead of sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol

DAY_MS = 86_400_000  # a day is always 24 h (SPEC §4.3)


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to; safe to share between threads."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def set(self, ms: int) -> None:
        with self._lock:
            if ms < self._now:
                raise ValueError("a ManualClock never goes backwards")
            self._now = ms

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms
