"""Threads and the CPU: background threads yield it to ingest and evaluation when it is scarce,
a thread can tell how much of it it got, and the operating system knows each thread by name."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

BACKGROUND_NICENESS = 5
PR_SET_NAME = 15  # prctl(2)
OS_NAME_BYTES = 15  # a Linux thread name's length, without its terminating NUL


def named_thread(target: Callable[..., object], name: str, args: tuple[object, ...] = ()) -> threading.Thread:
    """A daemon thread called `name`, in Python and (Linux) in `top -H` and `/proc/<pid>/task/*/comm`
    too, without the `milepost-` prefix: the process already says whose threads they are. Python 3.11
    leaves every thread named after the process, so operators could not tell them apart."""

    def run() -> None:
        set_os_thread_name(name.removeprefix("milepost-"))
        target(*args)

    return threading.Thread(target=run, name=name, daemon=True)


def set_os_thread_name(name: str) -> None:
    """Name the calling thread for the operating system (Linux; elsewhere nothing happens)."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):  # no libc, or no prctl in it
        _libc().prctl(PR_SET_NAME, name.encode()[:OS_NAME_BYTES], 0, 0, 0)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once for every thread that names itself."""
    return ctypes.CDLL(None, use_errno=True)


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
