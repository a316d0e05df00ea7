"""Thread priority: background threads yield the CPU to ingest and evaluation when it is scarce."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

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
