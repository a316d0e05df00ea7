"""SIGKILL a real `milepost serve` while deliveries are in flight, a few times: after the last
restart every change of the outbox has reached the partner at least once, in order per user, and a
change received twice came again in the very same batch (same ids, same Idempotency-Key)."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest
from tests.conformance.rest_runner import Rest, unique
from tests.outputs.partner import Partner
from tests.support.server import running_server

pytestmark = [pytest.mark.api, pytest.mark.slow]

GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
ENV = {
    "MILEPOST_ALLOW_PRIVATE_OUTPUTS": "1",
    "MILEPOST_DELIVERY_POLL_S": "0.05",
    "MILEPOST_DELIVERY_BACKOFF_BASE_S": "0.1",
    "MILEPOST_DELIVERY_BACKOFF_MAX_S": "0.5",
}
KILLS = 3


def _bulk(rest: Rest, inp: dict[str, Any], mpids: list[int], tier: str) -> None:
    client = rest.events_client(inp["key"], inp["secret"])
    for i in range(0, len(mpids), 100):
        batches = [
            {
                "mpid": m,
                "environment": "production",
                "user_attributes": {"tier": tier},
                "user_identities": {"customer_id": f"crash-{m}"},
                "events": [
                    {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
                ],
            }
            for m in mpids[i : i + 100]
        ]
        resp = client.post("/v2/bulkevents", json=batches)
        assert resp.status_code == 202, resp.text


def test_sigkill_during_delivery_loses_no_change(tmp_path: Path) -> None:
    rng = random.Random(6)
    partner = Partner()
    partner.route("/crash", delay_s=0.03)
    try:
        with running_server(tmp_path / "data", ENV) as (server, creds):
            rest = Rest(server, creds)
            inp = rest.input()
            doc = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
            audience = doc["milestones"][0]["audience"]["id"]
            settings = {"url": partner.url("/crash"), "secret": "s", "batch_size": 10}
            out = rest.ok(
                "POST",
                "/api/v1/outputs",
                201,
                json={"type": "webhook", "name": unique("c"), "settings": settings},
            )
            conn = rest.ok(
                "POST", f"/api/v1/audiences/{audience}/connections", 201, json={"output_id": out["id"]}
            )
            rest.wait_settled(audience)
            # Streaming before any change: changes committed before the connection's first
            # synchronisation began reach the partner as that synchronisation's adds, not as
            # themselves.
            rest.wait_connection(conn["id"], lambda c: c["delivery"]["phase"] == "stream", 30)
            users = [rest.mpid() for _ in range(600)]
            _bulk(rest, inp, users[:300], "gold")
            for kill in range(KILLS):
                # Let deliveries get going, then kill the server in the middle of them.
                partner.wait(lambda n=len(partner.received): len(partner.received) > n + 3, what="deliveries")
                time.sleep(rng.uniform(0.05, 0.3))
                server.kill()
                in_flight = len(partner.received)
                server.start()
                rest.close()
                rest = Rest(server, creds)
                if kill == 0:
                    _bulk(rest, inp, users[300:], "gold")
                elif kill == 1:
                    _bulk(rest, inp, rng.sample(users, 200), "silver")
                assert in_flight < len(partner.received) + 10_000  # the partner kept receiving
            rest.wait_connection(
                conn["id"],
                lambda c: c["delivery"]["phase"] == "stream" and c["delivery"]["pending"] == 0,
                120,
            )
            rest.close()
            server.stop()

        store = duckdb.connect(str(tmp_path / "data" / "store" / "store.duckdb"), read_only=True)
        outbox = store.execute(
            "SELECT seq, mpid, action FROM membership_changes WHERE audience_id = ? ORDER BY seq", [audience]
        ).fetchall()
        store.close()
        assert len(outbox) >= 600  # 600 adds and up to 200 removes

        received = [(r, c) for r in partner.requests("/crash") if r.status == 200 for c in r.changes]
        ids = {f"c{seq}" for seq, _, _ in outbox}
        got = {c["id"] for _, c in received}
        assert ids <= got, f"{len(ids - got)} changes never reached the partner"
        assert got <= ids  # nothing that was not in the outbox

        # In order per user (by first receipt).
        first: dict[str, int] = {}
        for n, (_, c) in enumerate(received):
            first.setdefault(c["id"], n)
        by_user: dict[int, list[int]] = defaultdict(list)
        for seq, mpid, _ in outbox:
            by_user[mpid].append(first[f"c{seq}"])
        assert all(order == sorted(order) for order in by_user.values())

        # A change received twice came in the same batch again: the same ids, the same key.
        batches: dict[str, set[tuple[str, tuple[str, ...]]]] = defaultdict(set)
        for r, c in received:
            batches[c["id"]].add((r.headers["Idempotency-Key"], tuple(x["id"] for x in r.changes)))
        repeated = [i for i, seen in batches.items() if sum(1 for _, c in received if c["id"] == i) > 1]
        for change_id in repeated:
            assert len(batches[change_id]) == 1, batches[change_id]
    finally:
        partner.close()
