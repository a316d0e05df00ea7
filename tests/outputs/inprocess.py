"""An in-process Milepost (manual clock, no background threads) delivering to a real local HTTP
partner, stepped by hand: for output types whose exchanges need checking message by message."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from milepost.cli import _initialise
from milepost.clock import ManualClock
from milepost.config import Config
from milepost.outputs.delivery import DeliveryRunner
from milepost.outputs.policy import RetryPolicy
from milepost.outputs.settings import DeliverySettings
from milepost.runtime import Runtime

T0 = 1_767_225_600_000  # 2026-01-01
GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
# Stepped by hand, no time passes: every acknowledgement is written at once (see test_state for the
# deferred ones).
SETTINGS = DeliverySettings(
    allow_private=True,
    poll_s=0.01,
    policy=RetryPolicy(base_s=0.0001, max_s=0.0001),
    identity_scan_s=0.0,
    ack_delay_s=0.0,
)


@dataclass
class Local:
    runtime: Runtime
    clock: ManualClock
    audience: int
    milestone: int
    input_id: int

    def send(self, mpid: int, tier: str | None = None, identities: dict[str, str] | None = None) -> None:
        batch: dict[str, Any] = {
            "mpid": mpid,
            "environment": "production",
            "events": [
                {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
            ],
        }
        if tier is not None:
            batch["user_attributes"] = {"tier": tier}
        if identities is not None:
            batch["user_identities"] = identities
        body = orjson.dumps(batch)
        asyncio.run(self.runtime.ingest.accept_for_input(self.input_id, body, "events", self.clock.now_ms()))
        self.runtime.audiences.catch_up()

    def connect(self, output_id: int, **kw: Any) -> int:
        conn = self.runtime.catalog.create_connection(self.audience, output_id, **kw)
        self.runtime.journeys.refresh()
        return conn.id

    def runner(self, settings: DeliverySettings = SETTINGS) -> DeliveryRunner:
        rt = self.runtime
        return DeliveryRunner(
            rt.catalog,
            rt.store,
            lambda a: a in rt.journeys.calculated and a not in rt.journeys.pending,
            self.clock,
            settings,
            httpx.Client(),
        )


def drive(runner: DeliveryRunner, steps: int = 300) -> None:
    """Tick and step every worker until nothing is left to do."""
    idle = 0
    for _ in range(steps):
        runner.tick()
        busy = False
        for worker in list(runner.workers.values()):
            if worker.step() == 0:
                busy = True
        idle = 0 if busy else idle + 1
        if idle >= 3:
            return


def open_local(tmp_path: Path) -> Iterator[Local]:
    config = Config.from_env(tmp_path / "data")
    _initialise(config)
    clock = ManualClock(T0)
    runtime = Runtime.open(config, clock)
    runtime.start(background=False)
    try:
        inp = runtime.catalog.list_inputs()[0]
        journey = runtime.journeys.create({"name": "j", "milestones": [{"name": "gold", "criteria": GOLD}]})
        milestone = runtime.catalog.milestones(journey)[0]
        yield Local(runtime, clock, milestone.audience_id, milestone.id, inp.id)
    finally:
        runtime.close()
