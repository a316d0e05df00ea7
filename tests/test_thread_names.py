"""Threads named for the operating system too, so that `top -H` tells the server's threads apart."""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

import pytest

from milepost.priority import named_thread

pytestmark = pytest.mark.unit

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="thread names are read from /proc")


def _os_name() -> str:
    return Path("/proc/thread-self/comm").read_text().strip()


def _run(name: str, target_args: tuple[object, ...] = ()) -> tuple[str, str, tuple[object, ...]]:
    """What a thread made by `named_thread` saw: its OS name, its Python name, and its arguments."""
    seen: queue.Queue[tuple[str, str, tuple[object, ...]]] = queue.Queue()

    def target(*args: object) -> None:
        seen.put((_os_name(), threading.current_thread().name, args))

    thread = named_thread(target, name, target_args)
    assert thread.daemon
    thread.start()
    thread.join(5)
    return seen.get_nowait()


@linux_only
def test_the_os_knows_the_thread_by_its_name_without_the_prefix() -> None:
    os_name, py_name, args = _run("milepost-evaluator", (1, "two"))
    assert os_name == "evaluator"
    assert py_name == "milepost-evaluator"
    assert args == (1, "two")


@linux_only
def test_a_long_name_is_cut_to_what_linux_keeps() -> None:
    os_name, _, _ = _run("milepost-delivery-head-and-more")
    assert os_name == "delivery-head-a"  # 15 bytes


@linux_only
def test_the_calling_thread_keeps_its_own_name() -> None:
    before = _os_name()
    _run("milepost-writer")
    assert _os_name() == before
