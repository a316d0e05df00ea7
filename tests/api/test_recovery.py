"""After SIGKILLs during ingest, real-time membership equals a full recalculation and each transition is logged once."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.server import Server, free_port, init_data_dir

from milepost.config import Config
from milepost.runtime import Runtime

JOURNEY = {
    "name": "Tiers",
    "milestones": [
        {
            "name": "paid",
            "criteria": {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "paid"},
        },
        {
            "name": "watchers",
            "criteria": {
                "type": "event",
                "event": {"event_type": "custom_event", "name": "watch"},
                "having": {"fn": "count", "op": "greater_or_equal", "value": 2},
            },
            "children": [
                {"name": "emailable", "criteria": {"type": "identity", "identity": "email", "op": "exists"}}
            ],
        },
        {"name": "others", "remaining": True},
    ],
}


def _batch(rng: random.Random, n: int) -> dict[str, Any]:
    mpid = rng.randint(1, 40)
    batch: dict[str, Any] = {"mpid": mpid, "source_request_id": f"r{n}"}
    if rng.random() < 0.5:
        batch["user_attributes"] = {"plan": rng.choice(["free", "paid"])}
    if rng.random() < 0.2:
        batch["user_identities"] = {"email": f"u{mpid}@x.io"}
    batch["events"] = [
        {"event_type": "custom_event", "data": {"event_name": "watch", "custom_event_type": "media"}}
        for _ in range(rng.randint(0, 2))
    ]
    return batch


@pytest.mark.slow
def test_membership_survives_crashes_exactly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    creds = init_data_dir(data_dir)
    runtime = Runtime.open(Config.from_env(data_dir))
    journey_id = runtime.journeys.create(JOURNEY)
    output = runtime.catalog.create_output("file", "Out", {"directory": str(tmp_path / "out")})
    for m in runtime.catalog.milestones(journey_id):  # activated audiences are maintained in real time
        runtime.catalog.create_connection(m.audience_id, output.id)
    runtime.close()

    server = Server(data_dir, free_port())
    server.start()
    auth = (creds["input"]["key"], creds["input"]["secret"])
    stop = threading.Event()
    acknowledged: list[int] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        n = seed * 1_000_000
        with httpx.Client(auth=auth, timeout=10) as c:
            while not stop.is_set():
                n += 1
                body = [_batch(rng, n) for _ in range(rng.randint(1, 5))]
                for b in body:
                    b["source_request_id"] = f"{n}-{b['source_request_id']}"
                while not stop.is_set():
                    try:
                        if c.post(f"{server.url}/v2/bulkevents", json=body).status_code == 202:
                            acknowledged.append(n)
                            break
                    except httpx.HTTPError:
                        time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    rng = random.Random(9)
    try:
        for _ in range(5):
            time.sleep(rng.uniform(0.4, 1.2))
            server.kill()
            server.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        time.sleep(1.0)  # let the evaluator catch up with the last batches
        server.stop()
    assert len(acknowledged) > 20

    runtime = Runtime.open(Config.from_env(data_dir))
    try:
        engine = runtime.audiences
        engine.catch_up()
        ids = [m.audience_id for j in runtime.journeys.journeys() for m in j.milestones]
        before = {a: engine.members(a) for a in ids}
        assert any(before.values())
        check = engine.full_calculation()
        assert (check.adds, check.removes) == (0, 0)
        log = (
            runtime.store.reader()
            .execute(
                "SELECT audience_id, mpid, list(action ORDER BY seq) FROM membership_changes GROUP BY ALL"
            )
            .fetchall()
        )
        assert log
        for audience, mpid, actions in log:
            assert all(a == ("add" if i % 2 == 0 else "remove") for i, a in enumerate(actions)), (
                audience,
                mpid,
                actions,
            )
            assert (actions[-1] == "add") == (mpid in before[audience])
    finally:
        runtime.close()
