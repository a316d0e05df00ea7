"""A streaming worker is woken when the outbox head moves, not at its next poll: with every poll an
hour apart, a change committed after the sync reaches the partner once `notify()` is called."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from tests.outputs.scripted import Script, World, drive

from milepost.outputs.policy import RetryPolicy
from milepost.outputs.settings import DeliverySettings

pytestmark = pytest.mark.unit


def _settings(**timings: float) -> DeliverySettings:
    """Local partners allowed, retries at once, and the given polls."""
    return DeliverySettings(allow_private=True, policy=RetryPolicy(base_s=0.0001, max_s=0.0001), **timings)


HOUR = _settings(poll_s=3600.0, head_poll_s=3600.0)


def _received(script: Script, count: int) -> bool:
    """Whether the partner got `count` changes within a generous bound (30 s)."""
    pause = threading.Event()
    for _ in range(300):
        if len(script.accepted()) >= count:
            return True
        pause.wait(0.1)
    return False


def _connected(world: World) -> Script:
    """A connection to the world's audience, one member (mpid 1) to send, and the partner's script."""
    world.runtime.catalog.create_connection(world.audience, world.output_id)
    world.runtime.journeys.refresh()
    world.send(1, "gold")
    return Script()


def test_notify_wakes_the_workers_behind_the_head(world: World) -> None:
    script = _connected(world)
    runner = world.runner(script, HOUR)
    runner.start()
    try:
        assert _received(script, 1)  # the sync, started by the first look at the catalog
        world.send(2, "gold")  # committed to the outbox after every worker went idle for an hour
        runner.notify()
        assert _received(script, 2)
        assert script.accepted() == [(1, "add"), (2, "add")]
    finally:
        runner.close()


def test_once_commits_are_notified_the_head_is_read_between_them_only_every_poll(
    world: World,
) -> None:
    runner = world.runner(Script(), _settings(poll_s=0.2, head_poll_s=0.05))
    try:
        assert runner.head_wait_s() == 0.05  # no notification yet: writes may never be notified
        runner.notify()
        assert runner.head_wait_s() == 0.2
    finally:
        runner.close()


def test_a_change_not_notified_still_wakes_a_worker_once_commits_are_notified(
    world: World,
) -> None:
    script = _connected(world)
    # Workers see the change only once the head is read again: by the fallback read (every poll_s).
    runner = world.runner(script, _settings(poll_s=0.3, head_poll_s=0.05))
    runner.start()
    try:
        assert _received(script, 1)
        runner.notify()  # commits are notified from now on
        world.send(2, "gold")  # but this one is not
        assert _received(script, 2)
        assert script.accepted() == [(1, "add"), (2, "add")]
    finally:
        runner.close()


def test_an_idle_streaming_worker_sleeps_until_its_next_identity_scan_not_the_next_poll(
    world: World,
) -> None:
    script = _connected(world)
    runner = world.runner(script, _settings(poll_s=0.01, identity_scan_s=30.0))
    try:
        drive(runner)
        (worker,) = runner.workers.values()
        assert worker.state.phase == "stream" and script.accepted() == [(1, "add")]
        assert 20.0 < worker.step() <= 30.0  # nothing to send: the identity scan is the next thing due
        world.send(2, "gold")  # a change is still sent at once on a step (a moved head wakes the worker)
        drive(runner)
        assert script.accepted() == [(1, "add"), (2, "add")]
    finally:
        runner.close()


def test_without_a_connection_the_head_is_not_read_until_one_is_created(world: World) -> None:
    script = Script()
    runner = world.runner(script, _settings(poll_s=0.05, head_poll_s=0.01))
    reads: list[int] = []
    read_head = runner._head

    def counted(con: Any) -> dict[int, int]:
        reads.append(1)
        return read_head(con)

    runner._head = counted  # type: ignore[method-assign]
    runner.start()
    try:
        threading.Event().wait(0.3)  # thirty head polls' worth
        assert not runner.workers and reads == []
        world.runtime.catalog.create_connection(world.audience, world.output_id)
        world.runtime.journeys.refresh()
        world.send(1, "gold")
        assert _received(script, 1)  # the new worker syncs; the head is followed again
        world.send(2, "gold")
        runner.notify()
        assert _received(script, 2) and reads
        assert script.accepted() == [(1, "add"), (2, "add")]
    finally:
        runner.close()
