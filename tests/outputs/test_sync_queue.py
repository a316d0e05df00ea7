"""Synchronisation batches written as JSON by the store: the same records, ids, Idempotency-Key and
delivered identities as the records built one by one for every other output; and a batch the
partner refuses part of is split down to the refused record."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import orjson
import pytest
from tests.outputs.scripted import World, drive

from milepost.engines.duckdb import DuckDBStore
from milepost.engines.duckdb_membership import MEMBERSHIP_DDL
from milepost.outputs.records import change_record, idempotency_key, identities_json
from milepost.outputs.state import DeliveryStore
from milepost.outputs.sync_queue import SyncQueue

pytestmark = pytest.mark.unit

NAMES = ('Gold "tier"', "gold-ext é")


def _identities(world: World) -> None:
    """Several values of one type, device identities, characters JSON escapes, and a member with none."""
    con = world.runtime.store.connect()
    try:
        con.execute(
            "INSERT INTO identities VALUES "
            "('email', 'a@x', 1, 'a@x', false, 0), ('email', 'b@x', 1, 'b\"@x\n', false, 0), "
            "('ios_idfa', 'd2', 1, 'dev-2', true, 0), ('ios_idfa', 'd1', 1, 'dev-1', true, 0), "
            "('android_uuid', 'd3', 2, 'dév/3', true, 0), ('email', 'c@x', 3, 'c\\@x\t', false, 0)"
        ).fetchall()
        con.execute("DELETE FROM identities WHERE mpid = 4").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("accepted", [None, ("email", "ios_idfa")])
def test_json_batches_match_the_records_built_one_by_one(
    world: World, accepted: tuple[str, ...] | None
) -> None:
    world.runtime.catalog.create_connection(world.audience, world.output_id)  # the audience is calculated
    world.runtime.journeys.refresh()
    for m in (1, 2, 3, 4):
        world.send(m, "gold")
    _identities(world)
    con = world.runtime.store.connect()
    try:
        DeliveryStore.create_tables(con)
        queue = SyncQueue(con)
        con.execute("BEGIN TRANSACTION").fetchall()
        queue.take(9, world.audience, 3)
        con.execute("COMMIT").fetchall()

        changes = queue.changes(9, world.audience, 3, None, 10, accepted, None)
        looked_up = DeliveryStore(con).identities([1, 2, 3, 4])
        assert {c.mpid: c.identities for c in changes} == {
            m: ids.only(accepted, None) for m, ids in looked_up.items()
        }
        expected = [
            change_record(c, NAMES[0], NAMES[1], c.identities)
            for c in changes
            if accepted is None or c.identities
        ]
        assert [r["mpid"] for r in expected] == ([1, 2, 3, 4] if accepted is None else [1, 3])

        batch = queue.read_json(9, world.audience, 3, None, 10, accepted, NAMES)
        assert batch is not None
        assert orjson.loads(b"[" + batch.records + b"]") == expected
        assert batch.key == idempotency_key([r["id"] for r in expected])
        assert (batch.count, batch.last, batch.eligible) == (4, 4, len(expected))

        for recording in (queue, SyncQueue(con)):  # from the staged batch, and computed again
            con.execute("BEGIN TRANSACTION").fetchall()
            recording.deliver(9, batch)
            forms = dict(
                con.execute("SELECT mpid, identities FROM delivered WHERE connection_id = 9").fetchall()
            )
            con.execute("ROLLBACK").fetchall()
            assert forms == {r["mpid"]: identities_json(r) for r in expected}

        assert queue.read_json(9, world.audience, 3, 2, 10, accepted, NAMES) is not None
        assert queue.read_json(9, world.audience, 3, 4, 10, accepted, NAMES) is None
    finally:
        con.close()


def test_a_refused_record_of_a_synchronisation_batch_is_isolated(world: World) -> None:
    for m in (1, 2, 3, 4, 5):
        world.send(m, "gold")
    out = world.runtime.catalog.create_output(
        "webhook", "big", {"url": "http://partner.test/big", "secret": "k", "batch_size": 10}
    )
    cid = world.runtime.catalog.create_connection(world.audience, out.id).id
    world.runtime.journeys.refresh()
    requests: list[list[int]] = []

    def partner(request: httpx.Request) -> httpx.Response:
        mpids = [c["mpid"] for c in json.loads(request.content)["changes"]]
        requests.append(mpids)
        return httpx.Response(400 if 3 in mpids else 200, text="no such user")

    runner = world.runner(partner)  # type: ignore[arg-type]
    try:
        drive(runner)
        assert requests[0] == [1, 2, 3, 4, 5]
        assert [m for r in requests if 3 not in r for m in r] == [1, 2, 4, 5]
        stats = runner.stats(cid, world.audience)
        assert (stats["sent"], stats["failed"], stats["dead_letters"], stats["pending"]) == (4, 1, 1, 0)
        (dead,) = runner.dead_letters(cid)
        epoch = runner.workers[cid].state.epoch
        assert dead["record"]["id"] == f"s{cid}-{epoch}-3" and dead["status"] == 400
        assert dead["record"]["identities"] == {"customer_id": "c3"}
    finally:
        runner.close()


def test_batches_read_within_the_last_batch_span_are_the_batches_of_the_whole_queue(tmp_path: Path) -> None:
    """Each batch after the first is first looked for within twice the previous batch's MPID span;
    dense and sparse stretches of MPIDs must give the same batches as reading the whole queue."""
    mpids = list(range(1, 41)) + [1_000 + 97 * k for k in range(25)] + list(range(5_000, 5_030)) + [2**62]
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    try:
        for ddl in MEMBERSHIP_DDL:
            con.execute(ddl).fetchall()
        con.execute("INSERT INTO memberships SELECT 7, unnest($m), 100", {"m": mpids}).fetchall()
        con.execute(
            "INSERT INTO identities SELECT 'email', 'e' || m, m, 'e' || m, false, 0 FROM unnest($m) t(m)",
            {"m": mpids[::2]},
        ).fetchall()
        DeliveryStore.create_tables(con)
        queue = SyncQueue(con)
        con.execute("BEGIN TRANSACTION").fetchall()
        queue.take(9, 7, 1)
        con.execute("COMMIT").fetchall()
        for accepted in (None, ("email",)):
            after, seen = None, []
            while (batch := queue.read_json(9, 7, 1, after, 12, accepted, NAMES)) is not None:
                whole = SyncQueue(con).read_json(9, 7, 1, after, 12, accepted, NAMES)
                assert whole is not None
                assert (batch.records, batch.key, batch.count, batch.last, batch.eligible) == (
                    whole.records,
                    whole.key,
                    whole.count,
                    whole.last,
                    whole.eligible,
                )
                seen += [r["mpid"] for r in orjson.loads(b"[" + batch.records + b"]")]
                after = batch.last
            assert seen == (mpids if accepted is None else mpids[::2])
    finally:
        con.close()
        store.close()
