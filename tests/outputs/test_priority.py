"""Delivery threads run behind ingest and evaluation: a worker's thread is niced, its caller not."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from tests.outputs.scripted import Script, World

from milepost.priority import BACKGROUND_NICENESS, run_in_background

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux scheduling feature"),
]


def _niceness(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


def test_run_in_background_lowers_only_the_calling_thread() -> None:
    seen: list[int] = []

    def body() -> None:
        run_in_background()
        seen.append(_niceness(threading.get_native_id()))

    before = _niceness(threading.get_native_id())
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [min(19, before + BACKGROUND_NICENESS)]
    assert _niceness(threading.get_native_id()) == before


def test_connection_workers_run_at_background_priority(world: World) -> None:
    world.runtime.catalog.create_connection(world.audience, world.output_id)
    world.runtime.journeys.refresh()
    runner = world.runner(Script())
    runner.start()
    try:
        for _ in range(300):
            threads = [w._thread for w in runner.workers.values() if w._thread is not None]
            if threads and all(t.native_id is not None for t in threads):
                break
            threading.Event().wait(0.1)
        assert threads
        base = _niceness(threading.get_native_id())
        for _ in range(300):  # the thread lowers itself as it starts
            if all(_niceness(t.native_id or 0) == min(19, base + BACKGROUND_NICENESS) for t in threads):
                break
            threading.Event().wait(0.1)
        assert [_niceness(t.native_id or 0) for t in threads] == [min(19, base + BACKGROUND_NICENESS)] * len(
            threads
        )
    finally:
        runner.close()
