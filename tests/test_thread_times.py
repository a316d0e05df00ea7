"""A thread's own times: what it spent on a core counts, its sleep and other threads' work do not."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from milepost.priority import ThreadTimes, thread_times, timed

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_work_counts_and_sleep_does_not() -> None:
    before = thread_times()
    _spin(0.05)
    worked = thread_times() - before
    assert worked.on_cpu_s >= 0.05
    before = thread_times()
    time.sleep(0.2)
    slept = thread_times() - before
    assert slept.on_cpu_s < 0.05


def test_another_thread_s_work_is_not_counted() -> None:
    before = thread_times()
    other = threading.Thread(target=_spin, args=(0.2,))
    other.start()
    other.join()
    assert (thread_times() - before).on_cpu_s < 0.1


@pytest.mark.skipif(sys.platform != "linux", reason="the scheduler's statistics are Linux's")
def test_the_wait_for_a_core_is_known_on_linux_and_never_goes_back() -> None:
    first = thread_times()
    _spin(0.02)
    second = thread_times()
    assert first.waiting_s is not None and second.waiting_s is not None
    assert (second - first).waiting_s is not None and second.waiting_s >= first.waiting_s


def test_an_unknown_wait_stays_unknown() -> None:
    assert (ThreadTimes(2.0, None) - ThreadTimes(0.5, 1.0)) == ThreadTimes(1.5, None)
    assert (ThreadTimes(2.0, 3.0) - ThreadTimes(0.5, None)) == ThreadTimes(1.5, None)
    assert (ThreadTimes(2.0, 3.0) - ThreadTimes(0.5, 1.0)) == ThreadTimes(1.5, 2.0)


def test_timed_gives_the_work_s_result_and_its_times() -> None:
    result, spent = timed(lambda: _spin(0.05) or "done")
    assert result == "done" and spent.on_cpu_s >= 0.05
