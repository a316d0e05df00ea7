"""The delivery runner in process, stepped by hand with a manual clock and a scripted partner
(httpx.MockTransport): batching, ordering, resuming after a restart with the same ids, and the
24-hour fault."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest
from tests.outputs.scripted import SETTINGS, Script, World, connect, drive

from milepost.outputs.delivery import DeliveryRunner
from milepost.outputs.policy import DAY_MS

pytestmark = pytest.mark.unit


def test_sync_then_stream_in_order_in_batches(world: World) -> None:
    for m in (1, 2, 3):
        world.send(m, "gold")
    cid = connect(world)
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
    cid = connect(world)
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
    cid = connect(world)
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
    cid = connect(world, on_deactivate="remove_members")
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
    cid = connect(world)
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
    cid = connect(world)
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


def test_a_streamed_acknowledgement_is_written_with_the_next_batch_or_alone_after_the_delay(
    world: World,
) -> None:
    for m in (1, 2, 3):
        world.send(m, "gold")
    cid = connect(world)
    script = Script()
    runner = world.runner(script, replace(SETTINGS, ack_delay_s=60.0))
    try:
        drive(runner)  # the synchronisation's acknowledgements are written at once
        assert runner.stats(cid, world.audience)["sent"] == 3
        world.send(4, "gold")
        drive(runner)
        assert script.accepted()[3:] == [(4, "add")]
        assert runner.stats(cid, world.audience)["sent"] == 3  # not written yet
        world.send(5, "gold")
        drive(runner)
        assert script.accepted()[4:] == [(5, "add")]
        stats = runner.stats(cid, world.audience)  # written with the next batch's in-flight mark
        assert stats["sent"] == 4 and stats["pending"] == 1
    finally:
        runner.close()  # stepped by hand, as a crash: the last acknowledgement is not written

    again = Script()
    runner = world.runner(again, replace(SETTINGS, ack_delay_s=0.01))
    try:
        drive(runner)
        assert again.seen[0][1:] == script.seen[-1][1:]  # the same batch: ids, changes, key
        assert again.accepted() == [(5, "add")]
        time.sleep(0.02)
        runner.workers[cid].step()  # no batch followed within the delay: written alone
        stats = runner.stats(cid, world.audience)
        assert stats["sent"] == 5 and stats["pending"] == 0
    finally:
        runner.close()
