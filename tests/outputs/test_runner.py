"""The delivery runner in process, stepped by hand with a manual clock and a scripted partner
(httpx.MockTransport): batching, ordering, resuming after a restart with the same ids, and the
24-hour fault."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from milepost.cli import _initialise
from milepost.clock import ManualClock
from milepost.config import Config
from milepost.outputs.delivery import DeliveryRunner
from milepost.outputs.policy import DAY_MS, RetryPolicy
from milepost.outputs.settings import DeliverySettings
from milepost.runtime import Runtime

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000  # 2026-01-01
GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
SETTINGS = DeliverySettings(allow_private=True, poll_s=0.01, policy=RetryPolicy(base_s=0.0001, max_s=0.0001))


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


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    config = Config.from_env(tmp_path / "data")
    _initialise(config)
    clock = ManualClock(T0)
    runtime = Runtime.open(config, clock)
    runtime.start(background=False)
    try:
        inp = runtime.catalog.list_inputs()[0]
        journey = runtime.journeys.create({"name": "j", "milestones": [{"name": "gold", "criteria": GOLD}]})
        audience = runtime.catalog.milestones(journey)[0].audience_id
        output = runtime.catalog.create_output(
            "webhook", "hook", {"url": "http://partner.test/hook", "secret": "k", "batch_size": 2}
        )
        yield World(runtime, clock, audience, inp.id, output.id)
    finally:
        runtime.close()


def _connect(world: World, **kw: Any) -> int:
    conn = world.runtime.catalog.create_connection(world.audience, world.output_id, **kw)
    world.runtime.journeys.refresh()
    return conn.id


def test_sync_then_stream_in_order_in_batches(world: World) -> None:
    for m in (1, 2, 3):
        world.send(m, "gold")
    cid = _connect(world)
    script = Script()
    runner = world.runner(script)
    try:
        drive(runner)
        assert script.accepted() == [(1, "add"), (2, "add"), (3, "add")]
        assert [len(ids) for _, ids, _, _ in script.seen] == [2, 1]  # batch_size 2
        assert script.seen[0][1] == [f"s{cid}-1-1", f"s{cid}-1-2"]
        world.send(2, "silver")
        world.send(4, "gold")
        world.send(2, "gold")
        drive(runner)
        assert script.accepted()[3:] == [(2, "remove"), (4, "add"), (2, "add")]
        stats = runner.stats(cid, world.audience)
        assert stats["sent"] == 6 and stats["pending"] == 0 and stats["phase"] == "stream"
    finally:
        runner.close()


def test_a_restart_resends_the_unacknowledged_batch_with_the_same_ids(world: World) -> None:
    cid = _connect(world)
    for m in (1, 2, 3, 4):
        world.send(m, "gold")
    first = Script(answers=[200, 500, 500])
    runner = world.runner(first)
    drive(runner, until=lambda: len(first.seen) == 3)
    runner.close()  # a crash before the second batch was acknowledged
    assert first.seen[1][1] == first.seen[2][1] and first.seen[1][3] == first.seen[2][3]

    second = Script()
    runner = world.runner(second)
    try:
        drive(runner)
        assert second.seen[0][1] == first.seen[1][1]  # the same ids
        assert second.seen[0][3] == first.seen[1][3]  # and the same Idempotency-Key
        assert first.accepted() + second.accepted() == [(1, "add"), (2, "add"), (3, "add"), (4, "add")]
        assert world.runtime.catalog.get_connection(cid).health == "ok"
    finally:
        runner.close()


def test_failing_for_a_day_faults_and_keeps_the_backlog(world: World) -> None:
    cid = _connect(world)
    world.send(1, "gold")
    script = Script(answers=[503] * 1000)
    runner = world.runner(script)
    try:
        drive(runner, until=lambda: len(script.seen) >= 3)
        assert world.runtime.catalog.get_connection(cid).health == "retrying"
        world.clock.advance(DAY_MS)
        drive(runner, until=lambda: world.runtime.catalog.get_connection(cid).health == "faulted")
        tries = len(script.seen)
        drive(runner, steps=20)
        assert len(script.seen) == tries  # paused
        world.send(2, "gold")
        script.answers.clear()
        runner.resume(cid)
        drive(runner)
        assert script.accepted() == [(1, "add"), (2, "add")], script.seen[-4:]
        assert "24 h" in (runner.stats(cid, world.audience)["last_error"] or "")
    finally:
        runner.close()


def test_ineligible_members_are_counted_not_sent(world: World) -> None:
    out = world.runtime.catalog.create_output(
        "webhook", "emails", {"url": "http://partner.test/e", "secret": "k"}, accepted_identities=["email"]
    )
    world.send(1, "gold")
    conn = world.runtime.catalog.create_connection(world.audience, out.id)
    world.runtime.journeys.refresh()
    script = Script()
    runner = world.runner(script)
    try:
        drive(runner)
        assert script.seen == []
        stats = runner.stats(conn.id, world.audience)
        assert stats["ineligible"] == 1 and stats["sent"] == 0
    finally:
        runner.close()


def test_deleting_a_connection_forgets_its_state(world: World) -> None:
    cid = _connect(world, on_deactivate="remove_members")
    world.send(1, "gold")
    script = Script()
    runner = world.runner(script)
    try:
        drive(runner)
        world.runtime.catalog.delete_connection(cid)
        world.runtime.journeys.refresh()
        drive(runner)
        assert script.accepted() == [(1, "add"), (1, "remove")]
        assert cid not in runner.workers
        assert runner.stats(cid, world.audience)["phase"] == "new"
    finally:
        runner.close()


def test_a_look_without_outputs_keeps_those_read_unless_a_connection_names_another(world: World) -> None:
    cid = _connect(world)
    runner = world.runner(Script())
    catalog = world.runtime.catalog
    try:
        runner.tick()
        before = runner.workers[cid]._assignment
        assert before is not None and before.output is not None
        assert before.output.settings["batch_size"] == 2
        catalog.update_output(
            world.output_id, settings={"url": "http://partner.test/hook", "secret": "k", "batch_size": 5}
        )
        runner.tick(outputs=False)
        kept = runner.workers[cid]._assignment
        assert kept is not None and kept.output == before.output
        other = catalog.create_output("webhook", "other", {"url": "http://partner.test/o", "secret": "k"})
        second = catalog.create_connection(world.audience, other.id).id
        runner.tick(outputs=False)  # a connection names an output not read yet: all are read again
        for c, output_id, size in ((cid, world.output_id, 5), (second, other.id, None)):
            got = runner.workers[c]._assignment
            assert got is not None and got.output is not None
            assert (got.output.id, got.output.settings.get("batch_size")) == (output_id, size)
        catalog.update_output(
            other.id, settings={"url": "http://partner.test/o", "secret": "k", "batch_size": 7}
        )
        runner.tick()
        got = runner.workers[second]._assignment
        assert got is not None and got.output is not None and got.output.settings["batch_size"] == 7
    finally:
        runner.close()


def test_resume_sends_with_the_output_as_it_is_now(world: World) -> None:
    """A connection faulted by its output's settings, fixed then resumed, is delivered with the
    fixed settings at once, though the supervisor re-reads outputs only every few looks."""
    cid = _connect(world)
    world.send(1, "gold")
    urls: list[str] = []

    def partner(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200 if request.url.path == "/fixed" else 403)

    runner = DeliveryRunner(
        world.runtime.catalog,
        world.runtime.store,
        lambda a: a in world.runtime.journeys.calculated and a not in world.runtime.journeys.pending,
        world.clock,
        SETTINGS,
        httpx.Client(transport=httpx.MockTransport(partner)),
    )
    try:
        drive(runner, until=lambda: world.runtime.catalog.get_connection(cid).health == "faulted")
        world.runtime.catalog.update_output(
            world.output_id, settings={"url": "http://partner.test/fixed", "secret": "k", "batch_size": 2}
        )
        runner.resume(cid)
        worker = runner.workers[cid]
        for _ in range(5):  # the worker alone: no look at the catalog in between
            worker.step()
        assert urls[-1] == "http://partner.test/fixed"
        assert runner.stats(cid, world.audience)["sent"] == 1
        assert world.runtime.catalog.get_connection(cid).health == "ok"
    finally:
        runner.close()
