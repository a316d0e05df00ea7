"""Per-input token buckets: a sender over its rate gets 429 with a Retry-After that says when to come back."""

from __future__ import annotations

import math
import threading

from milepost.clock import Clock


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, clock: Clock) -> None:
        self.rate = rate_per_s
        self.burst = max(burst, 1.0)
        self.clock = clock
        self._buckets: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def take(self, key: int, cost: float) -> float:
        """Take `cost` tokens; return 0 when allowed, else the seconds to wait before retrying."""
        now = self.clock.now_ms()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) / 1000.0 * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return max(0.001, (min(cost, self.burst) - tokens) / self.rate)

    @staticmethod
    def retry_after_header(seconds: float) -> int:
        return max(1, math.ceil(seconds))
