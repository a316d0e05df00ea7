"""The in-memory mirror of the store's keys, identities and users stays what the store holds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, UserChange, build_plan
from milepost.ingest.state import StateMirror
from milepost.model.batch import IngestRequest

DAY = 86_400_000
T0 = 1_780_000_000_000
WINDOWS = DedupeWindows(request_ms=2 * DAY, message_ms=1 * DAY)


def _mirror_view(m: StateMirror) -> tuple[Any, ...]:
    return (
        m.request_keys,
        m.message_keys,
        m.owners,
        {k: v for k, v in m.user_keys.items() if v},
        m.inputs_of,
    )


def _random_batch(rng: random.Random) -> dict[str, Any]:
    batch: dict[str, Any] = {"events": []}
    if rng.random() < 0.5:
        batch["mpid"] = rng.randint(1, 8)
    ids = {}
    for id_type in ("customer_id", "email", "other"):
        if rng.random() < 0.4:
            ids[id_type] = f"{id_type[0]}{rng.randint(1, 6)}"
    if rng.random() < 0.2:
        ids["email"] = ids.get("email", "e1").upper()  # the same key with another spelling
    if ids:
        batch["user_identities"] = ids
    if rng.random() < 0.3:
        batch["device_info"] = {"ios_idfv": f"d{rng.randint(1, 5)}"}
    if rng.random() < 0.5:
        batch["source_request_id"] = f"r{rng.randint(1, 30)}"
    for _ in range(rng.randint(0, 3)):
        data: dict[str, Any] = {"event_name": "x", "custom_event_type": "other"}
        if rng.random() < 0.7:
            data["source_message_id"] = f"m{rng.randint(1, 60)}"
        batch["events"].append({"event_type": "custom_event", "data": data})
    if rng.random() < 0.1:
        batch["environment"] = "development"
    return batch


def test_mirror_matches_a_fresh_read_after_random_ingest(tmp_path: Path) -> None:
    rng = random.Random(11)
    store = DuckDBStore(tmp_path / "store")
    try:
        at = T0
        for step in range(120):
            at += rng.choice([1_000, 3_600_000, DAY // 2])
            requests = []
            for j in range(rng.randint(1, 3)):
                body = [_random_batch(rng) for _ in range(rng.randint(1, 4))]
                batches, _ = normalize_request(body, bulk=True, historical=False, received_at=at + j)
                requests.append(IngestRequest(rng.randint(1, 2), at + j, batches))
            store.apply(build_plan(requests, store, WINDOWS, rng))
            if step % 40 == 39:
                store.purge_dedupe_keys(at - WINDOWS.request_ms, at - WINDOWS.message_ms)
            if step % 30 == 29:  # sealed events keep their message keys
                store.seal(min_rows=1)
            kept = store._state()
            store._mirror = None  # what a restart reads
            assert _mirror_view(kept) == _mirror_view(store._state()), f"step {step}"
    finally:
        store.close()


def test_a_failed_commit_reads_the_mirror_again(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    try:
        batches, _ = normalize_request(
            [{"mpid": 5, "user_identities": {"customer_id": "c"}}],
            bulk=True,
            historical=False,
            received_at=T0,
        )
        store.apply(build_plan([IngestRequest(1, T0, batches)], store, WINDOWS, random.Random(1)))
        state = store._state()
        store._con.execute("DELETE FROM identities").fetchall()  # the mirror is now wrong
        plan = build_plan([IngestRequest(1, T0 + 1, batches)], store, WINDOWS, random.Random(1))
        plan.identities[("customer_id", "c")] = (6, "c", False, T0 + 1)
        plan.users.clear()
        # A plan whose write fails: a user row that violates NOT NULL on created_at.
        plan.users[7] = UserChange(created_at=None, is_new=True)  # type: ignore[arg-type]
        try:
            store.apply(plan)
        except Exception:
            pass
        else:
            raise AssertionError("the commit should have failed")
        assert store._mirror is None
        assert store._state().owners == {} and state is not store._state()
    finally:
        store.close()


def test_snapshot_sees_only_the_keys_stored_after_their_window_start() -> None:
    mirror = StateMirror(
        [(1, "r-old", 100), (1, "r-new", 300)],
        [(1, "m-old", 100), (1, "m-edge", 200), (1, "m-new", 300), (2, "m-new", 50)],
        [],
        [],
    )
    snap = mirror.snapshot(
        {(1, "r-old"), (1, "r-new"), (1, "r-absent")},
        200,
        {(1, "m-old"), (1, "m-edge"), (1, "m-new"), (2, "m-new"), (1, "m-absent")},
        200,
        set(),
        set(),
    )
    assert snap.seen_requests == {(1, "r-new")}
    assert snap.seen_messages == {(1, "m-new")}  # received at the window's start: forgotten
