"""Threads and the CPU: background threads yield it to ingest and evaluation when it is scarce,
and a thread can tell how much of it it got."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

BACKGROUND_NICENESS = 5


def run_in_background() -> None:
    """Lower the calling thread's CPU priority by `BACKGROUND_NICENESS`.

    Linux schedules each thread on its own, so only this thread yields; elsewhere this does nothing.
    Delivery runs so: when ingest and evaluation need the cores, its batches grow instead, and a
    larger batch costs less CPU per change.
    """
    if sys.platform != "linux":
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):  # e.g. not allowed by the platform's policy
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS)


@dataclass(frozen=True)
class ThreadTimes:
    """A thread's time so far: on a core, and (Linux only, else None) ready to run but waiting for one."""

    on_cpu_s: float
    waiting_s: float | None

    def __sub__(self, earlier: ThreadTimes) -> ThreadTimes:
        waiting = None
        if self.waiting_s is not None and earlier.waiting_s is not None:
            waiting = self.waiting_s - earlier.waiting_s
        return ThreadTimes(self.on_cpu_s - earlier.on_cpu_s, waiting)


def thread_times() -> ThreadTimes:
    """The calling thread's times. What is left of a span's wall time after both was spent blocked:
    on a lock, the GIL, I/O, or other threads' work."""
    return ThreadTimes(time.thread_time(), _waiting_s())


def timed(work: Callable[[], T]) -> tuple[T, ThreadTimes]:
    """`work`'s result, and the calling thread's times in it."""
    before = thread_times()
    result = work()
    return result, thread_times() - before


def _waiting_s() -> float | None:
    try:  # the scheduler's statistics: time on a core, time waiting on a run queue (ns), slices
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):  # not Linux, or built without scheduler statistics
        return None
