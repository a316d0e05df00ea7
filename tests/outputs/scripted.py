"""A Milepost in process for the delivery tests: a runtime with one journey (gold users) and a
webhook output, a scripted partner (httpx.MockTransport), and a way to step the runner by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from tests.outputs.inprocess import open_local

from milepost.clock import ManualClock
from milepost.outputs.delivery import DeliveryRunner
from milepost.outputs.policy import RetryPolicy
from milepost.outputs.settings import DeliverySettings
from milepost.runtime import Runtime

# Stepped by hand: every acknowledgement is written at once (see test_state for the deferred ones).
SETTINGS = DeliverySettings(
    allow_private=True, poll_s=0.01, policy=RetryPolicy(base_s=0.0001, max_s=0.0001), ack_delay_s=0.0
)


@dataclass
class Script:
    """Answers in turn (then 200); records every request's change ids and Idempotency-Key."""

    answers: list[int] = field(default_factory=list)
    seen: list[tuple[int, list[str], list[tuple[int, str]], str]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status = self.answers.pop(0) if self.answers else 200
        changes = json.loads(request.content)["changes"]
        self.seen.append(
            (
                status,
                [c["id"] for c in changes],
                [(c["mpid"], c["action"]) for c in changes],
                request.headers["Idempotency-Key"],
            )
        )
        return httpx.Response(status)

    def accepted(self) -> list[tuple[int, str]]:
        return [c for status, _, changes, _ in self.seen if status == 200 for c in changes]


@dataclass
class World:
    runtime: Runtime
    clock: ManualClock
    audience: int
    input_id: int
    output_id: int

    def send(self, mpid: int, tier: str) -> None:
        body = orjson.dumps(
            {
                "mpid": mpid,
                "environment": "production",
                "user_attributes": {"tier": tier},
                "user_identities": {"customer_id": f"c{mpid}"},
                "events": [
                    {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
                ],
            }
        )
        asyncio.run(self.runtime.ingest.accept_for_input(self.input_id, body, "events", self.clock.now_ms()))
        self.runtime.audiences.catch_up()

    def runner(self, script: Script, settings: DeliverySettings = SETTINGS) -> DeliveryRunner:
        http = httpx.Client(transport=httpx.MockTransport(script))
        rt = self.runtime
        return DeliveryRunner(
            rt.catalog,
            rt.store,
            lambda a: a in rt.journeys.calculated and a not in rt.journeys.pending,
            self.clock,
            settings,
            http,
        )


def drive(runner: DeliveryRunner, until: Callable[[], bool] | None = None, steps: int = 200) -> None:
    """Tick and step every worker until nothing is left to do (or `until` holds)."""
    idle = 0
    for _ in range(steps):
        runner.tick()
        busy = False
        for worker in list(runner.workers.values()):
            if worker.step() == 0:
                busy = True
        if until is not None and until():
            return
        idle = 0 if busy else idle + 1
        if until is None and idle >= 3:
            return
    if until is not None:
        raise AssertionError("the runner never got there")


def open_world(tmp_path: Path) -> Iterator[World]:
    """The world of one test (the `world` fixture): `open_local`'s, with a webhook output."""
    for local in open_local(tmp_path):
        output = local.runtime.catalog.create_output(
            "webhook", "hook", {"url": "http://partner.test/hook", "secret": "k", "batch_size": 2}
        )
        yield World(local.runtime, local.clock, local.audience, local.input_id, output.id)


def connect(world: World, **kw: Any) -> int:
    conn = world.runtime.catalog.create_connection(world.audience, world.output_id, **kw)
    world.runtime.journeys.refresh()
    return conn.id
