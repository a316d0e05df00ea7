"""Prometheus histograms fed many values at once, and their text for `/metrics`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily

# Waits of batches and timers (the real-time target is 1 s) ...
WAIT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# ... and answers a user waits for (an estimate as the criteria builder types).
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Latencies:
    """A histogram of seconds fed many values at once: a busy evaluation has thousands of batches,
    and `prometheus_client.Histogram.observe` costs ~2 µs per value on the caller's thread."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = np.array(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: Sequence[float] | np.ndarray, times: Sequence[int] | None = None) -> None:
        """Observe each value (`times[i]` times over, when given)."""
        values = np.asarray(seconds, dtype=np.float64)
        if not values.size:
            return
        weights = None if times is None else np.asarray(times, dtype=np.int64)
        # A bucket counts the values at most its bound (Prometheus' `le`).
        where = np.searchsorted(self._bounds, values)
        counts = np.bincount(where, weights=weights, minlength=len(self._counts)).astype(np.int64)
        total = float(values.sum() if weights is None else (values * weights).sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Observe how long the block took."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe([time.perf_counter() - t0])

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(f"{b:g}", n) for b, n in zip(self._bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        return [HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)]


def render(*collectors: Latencies) -> str:
    """The collectors' text in Prometheus' format."""
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    return generate_latest(registry).decode()
