"""What the supervisor reads between looks: the outbox head per audience (a connection whose audience
did not change is not woken), and the connections' records rebuilt only when their rows changed."""

from __future__ import annotations

import pytest
from tests.outputs.inprocess import GOLD
from tests.outputs.scripted import Script, World, connect, drive

pytestmark = pytest.mark.unit

SILVER = {**GOLD, "value": "silver"}


def _heads(world: World) -> dict[int, int]:
    rows = (
        world.runtime.store.reader()
        .execute("SELECT audience_id, max(seq) FROM membership_changes GROUP BY audience_id")
        .fetchall()
    )
    return {int(a): int(s) for a, s in rows}


def test_the_head_is_followed_per_audience_and_wakes_only_the_workers_behind_their_own(
    world: World,
) -> None:
    rt = world.runtime
    journey = rt.journeys.create({"name": "s", "milestones": [{"name": "silver", "criteria": SILVER}]})
    silver = rt.catalog.milestones(journey)[0].audience_id
    gold_cid = connect(world)
    silver_cid = rt.catalog.create_connection(silver, world.output_id).id
    rt.journeys.refresh()
    world.send(1, "gold")
    world.send(2, "silver")
    script = Script()
    runner = world.runner(script)
    try:
        drive(runner)
        assert sorted(script.accepted()) == [(1, "add"), (2, "add")]
        assert {a: runner.head_of(a) for a in (world.audience, silver)} == {
            a: s for a, s in _heads(world).items() if a in (world.audience, silver)
        }
        gold, other = runner.workers[gold_cid], runner.workers[silver_cid]
        before = runner.head_of(silver)
        world.send(3, "gold")  # only the gold audience's outbox grows
        gold.wake.clear()
        other.wake.clear()
        assert runner._moved(runner._head(runner._con))
        assert gold.wake.is_set() and not other.wake.is_set()
        assert runner.head_of(world.audience) == _heads(world)[world.audience] > before
        assert runner.head_of(silver) == before
        assert runner.head_seq == max(_heads(world).values())
        assert not runner._moved(runner._head(runner._con))  # read already: nothing moved
        drive(runner)
        assert script.accepted()[-1] == (3, "add")
        world.send(3, "silver")  # leaves gold, enters silver: both move
        gold.wake.clear()
        other.wake.clear()
        assert runner._moved(runner._head(runner._con))
        assert gold.wake.is_set() and other.wake.is_set()
        drive(runner)
        assert sorted(script.accepted()[-2:]) == [(3, "add"), (3, "remove")]
    finally:
        runner.close()


def test_the_connections_token_changes_with_every_field_of_a_connection_record(
    world: World,
) -> None:
    catalog = world.runtime.catalog
    cid = connect(world)
    token = catalog.connections_token()
    assert catalog.connections_token() == token
    changes = [
        lambda: catalog.set_connection_health(cid, "retrying"),
        lambda: catalog.update_connection(cid, status="inactive"),
        lambda: catalog.update_output(world.output_id, name="renamed"),
        lambda: catalog.delete_connection(cid),
    ]
    for change in changes:
        change()
        now = catalog.connections_token()
        assert now != token
        token = now


def test_a_look_builds_the_connections_again_only_when_their_rows_changed(
    world: World,
) -> None:
    catalog = world.runtime.catalog
    cid = connect(world)
    runner = world.runner(Script())
    try:
        runner.tick()
        assert runner._connections is not None
        read = runner._connections[1]
        runner.tick(outputs=False)
        assert runner._connections[1] is read  # unchanged rows: the records stand
        catalog.set_connection_health(cid, "retrying")
        catalog.update_output(world.output_id, name="renamed")
        runner.tick(outputs=False)
        got = runner.workers[cid]._assignment
        assert got is not None
        assert (got.connection.health, got.connection.output_name) == ("retrying", "renamed")
        assert got.connection == catalog.get_connection(cid)
        catalog.update_connection(cid, status="inactive")
        runner.tick(outputs=False)
        got = runner.workers[cid]._assignment
        assert got is not None and got.connection.status == "inactive"
        catalog.delete_connection(cid)
        runner.tick(outputs=False)
        got = runner.workers[cid]._assignment
        assert got is not None and got.deleted
    finally:
        runner.close()


def test_a_read_as_large_as_an_evaluation_under_full_load_is_kept_for_the_workers(world: World) -> None:
    """At 20,000 events/s an evaluation writes about 20,000 changes: the workers read them from the
    tail, not each from the store."""
    connect(world)
    world.send(1, "gold")
    runner = world.runner(Script())
    try:
        drive(runner)
        after = runner.head_seq
        n = 25_000
        con = world.runtime.store.connect()
        con.execute(
            "INSERT INTO membership_changes (seq, audience_id, mpid, action, changed_at, cause, recorded_at) "
            "SELECT $after + i, $aud, 1000 + i, 'add', 0, 'ingest', 0 FROM range(1, $n + 1) t(i)",
            {"after": after, "aud": world.audience, "n": n},
        ).fetchall()
        con.close()
        assert runner._moved(runner._head(runner._con))
        kept = runner.tail.read(world.audience, after, n)
        assert kept is not None and len(kept) == n
        assert kept[0] == (after + 1, 1001, "add", 0) and kept[-1][0] == after + n
    finally:
        runner.close()
