"""Crash durability of the Events API (SPEC §3: "202 only once the data is durably stored").

A real `milepost serve` process is SIGKILLed and restarted at random moments while client threads
keep sending bulk requests. Every request is retried with the same body until it gets a 202, so
every batch is eventually acknowledged; de-duplication by `source_request_id` makes the retries
safe. Afterwards the store must hold every acknowledged batch and event exactly once, and nothing
that was not sent.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from tests.support.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.api]

CLIENTS = 3
MIN_RESTARTS = 20
MPIDS = [1_000 + i for i in range(50)]
RETRYABLE_STATUSES = {429, 503}


@dataclass
class Sent:
    """What the clients sent and what the server acknowledged."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    request_ids: set[str] = field(default_factory=set)  # every batch ever put on the wire
    markers: set[str] = field(default_factory=set)
    message_ids: set[str] = field(default_factory=set)
    acked_request_ids: set[str] = field(default_factory=set)  # batches whose request got a 202
    acked_markers: set[str] = field(default_factory=set)
    acked_requests: int = 0
    retries: int = 0
    unexpected: list[str] = field(default_factory=list)  # statuses that are never acceptable


def _batch(rng: random.Random) -> tuple[dict, list[str]]:
    request_id = f"dur-{uuid.uuid4()}"
    markers = [str(uuid.uuid4()) for _ in range(rng.randint(1, 3))]
    events = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": "durability_probe",
                "custom_event_type": "other",
                "source_message_id": f"msg-{marker}",
                "custom_attributes": {"marker": marker},
            },
        }
        for marker in markers
    ]
    batch = {
        "environment": "production",
        "mpid": rng.choice(MPIDS),
        "source_request_id": request_id,
        "user_attributes": {"last_marker": markers[-1]},
        "events": events,
    }
    return batch, markers


def _client(url: str, auth: tuple[str, str], sent: Sent, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, auth=auth, timeout=15) as client:
        while not stop.is_set():
            batches = [_batch(rng) for _ in range(rng.randint(1, 20))]
            body = orjson.dumps([b for b, _ in batches])
            with sent.lock:
                for b, markers in batches:
                    sent.request_ids.add(b["source_request_id"])
                    sent.markers.update(markers)
                    sent.message_ids.update(f"msg-{m}" for m in markers)
            # Retry the very same body until it is acknowledged, even after `stop` is set: once a
            # request may have reached the server, its batches must end up acknowledged.
            deadline = time.monotonic() + 60
            while True:
                if time.monotonic() > deadline:
                    with sent.lock:
                        sent.unexpected.append("a request was never acknowledged within 60 s")
                    return
                try:
                    resp = client.post(
                        "/v2/bulkevents", content=body, headers={"Content-Type": "application/json"}
                    )
                except httpx.TransportError:
                    with sent.lock:
                        sent.retries += 1
                    time.sleep(0.05)
                    continue
                if resp.status_code == 202:
                    with sent.lock:
                        sent.acked_requests += 1
                        for b, markers in batches:
                            sent.acked_request_ids.add(b["source_request_id"])
                            sent.acked_markers.update(markers)
                    break
                if resp.status_code in RETRYABLE_STATUSES:
                    with sent.lock:
                        sent.retries += 1
                    time.sleep(0.05)
                    continue
                # 400/403/500...: never acceptable for a valid batch from a valid input. Record it
                # and keep retrying so the rest of the run still exercises the crash path.
                with sent.lock:
                    sent.unexpected.append(f"{resp.status_code}: {resp.text[:300]}")
                time.sleep(0.1)


def test_acknowledged_batches_survive_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sent = Sent()
    restarts = 0
    with running_server(data_dir) as (server, creds):
        auth = (creds["input"]["key"], creds["input"]["secret"])
        stop = threading.Event()
        threads = [
            threading.Thread(target=_client, args=(server.url, auth, sent, stop, seed), daemon=True)
            for seed in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        chaos = random.Random(42)
        try:
            while restarts < MIN_RESTARTS:
                time.sleep(chaos.uniform(0.3, 1.5))
                server.kill()
                # Leave it down a moment now and then, so clients see refused connections too.
                if chaos.random() < 0.3:
                    time.sleep(chaos.uniform(0.05, 0.3))
                server.start()
                restarts += 1
            # A last stretch without crashes so every in-flight request gets its 202.
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=90)
        assert not any(t.is_alive() for t in threads), "a client never got its request acknowledged"
        server.stop()

    assert restarts >= MIN_RESTARTS
    assert sent.unexpected == [], sent.unexpected[:10]
    assert sent.acked_requests > 0
    # Every batch that was put on the wire was, eventually, acknowledged.
    assert sent.acked_request_ids == sent.request_ids
    assert sent.acked_markers == sent.markers

    con = duckdb.connect(str(data_dir / "store" / "store.duckdb"), read_only=True)
    try:
        batch_rows = con.execute("SELECT request_id, body FROM batches").fetchall()
        event_rows = con.execute(
            "SELECT json_extract_string(attrs, '$.marker'), source_message_id FROM events"
        ).fetchall()
        users = {r[0] for r in con.execute("SELECT mpid FROM users").fetchall()}
    finally:
        con.close()

    stored_ids = Counter(r[0] for r in batch_rows)
    duplicated_batches = {rid: n for rid, n in stored_ids.items() if n > 1}
    assert duplicated_batches == {}, f"batches stored more than once: {list(duplicated_batches.items())[:10]}"
    missing_batches = sent.acked_request_ids - set(stored_ids)
    assert missing_batches == set(), f"{len(missing_batches)} acknowledged batches were lost"
    assert set(stored_ids) <= sent.request_ids, "the store holds batches nobody sent"
    for rid, body in batch_rows:
        assert orjson.loads(body)["source_request_id"] == rid

    stored_markers = Counter(r[0] for r in event_rows)
    duplicated_events = {m: n for m, n in stored_markers.items() if n > 1}
    assert duplicated_events == {}, f"events stored more than once: {list(duplicated_events.items())[:10]}"
    missing_events = sent.acked_markers - set(stored_markers)
    assert missing_events == set(), f"{len(missing_events)} acknowledged events were lost"
    assert set(stored_markers) <= sent.markers, "the store holds events nobody sent"
    assert {r[1] for r in event_rows} <= sent.message_ids
    assert len(event_rows) == len(sent.markers)
    assert len(batch_rows) == len(sent.request_ids)

    assert users <= set(MPIDS)
