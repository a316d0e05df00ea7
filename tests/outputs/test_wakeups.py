"""A streaming worker is woken when the outbox head moves, not at its next poll: with every poll an
hour apart, a change committed after the sync reaches the partner once `notify()` is called."""

from __future__ import annotations

import threading

import pytest
from tests.outputs.test_runner import Script, World, world  # noqa: F401  (the fixture, by name)

from milepost.outputs.policy import RetryPolicy
from milepost.outputs.settings import DeliverySettings

pytestmark = pytest.mark.unit

HOUR = DeliverySettings(
    allow_private=True, poll_s=3600.0, head_poll_s=3600.0, policy=RetryPolicy(base_s=0.0001, max_s=0.0001)
)


def _received(script: Script, count: int) -> bool:
    """Whether the partner got `count` changes within a generous bound (30 s)."""
    pause = threading.Event()
    for _ in range(300):
        if len(script.accepted()) >= count:
            return True
        pause.wait(0.1)
    return False


def test_notify_wakes_the_workers_behind_the_head(request: pytest.FixtureRequest) -> None:
    w: World = request.getfixturevalue("world")
    w.runtime.catalog.create_connection(w.audience, w.output_id)
    w.runtime.journeys.refresh()
    w.send(1, "gold")
    script = Script()
    runner = w.runner(script, HOUR)
    runner.start()
    try:
        assert _received(script, 1)  # the sync, started by the first look at the catalog
        w.send(2, "gold")  # committed to the outbox after every worker went idle for an hour
        runner.notify()
        assert _received(script, 2)
        assert script.accepted() == [(1, "add"), (2, "add")]
    finally:
        runner.close()
