"""The ingest rules of SPEC §3 (de-duplication, identity resolution, profile merge) on a real store."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

DAY = 86_400_000
T0 = 1_780_000_000_000
WINDOWS = DedupeWindows(request_ms=30 * DAY, message_ms=7 * DAY)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = DuckDBStore(tmp_path / "store")
    yield s
    s.close()


def send(
    store: DuckDBStore,
    batches: list[dict[str, Any]],
    at: int = T0,
    input_id: int = 1,
    historical: bool = False,
):
    normalized, _ = normalize_request(batches, bulk=True, historical=historical, received_at=at)
    plan = build_plan([IngestRequest(input_id, at, normalized)], store, WINDOWS, random.Random(7))
    store.apply(plan)
    return plan.outcomes[0]


def ev(name: str = "watch", **data: Any) -> dict[str, Any]:
    return {"event_type": "custom_event", "data": {"event_name": name, "custom_event_type": "media", **data}}


def test_request_id_duplicate_is_dropped_whole(store: DuckDBStore) -> None:
    first = send(store, [{"mpid": 1, "source_request_id": "r1", "events": [ev()]}])
    again = send(store, [{"mpid": 1, "source_request_id": "r1", "events": [ev(), ev()]}], at=T0 + 1000)
    assert (first.stored_batches, again.stored_batches, again.duplicate_batches) == (1, 0, 1)
    assert store.profile(1)["event_counts"]["realtime"] == 1


def test_request_id_is_forgotten_after_its_window(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "source_request_id": "r1", "events": [ev()]}])
    later = send(store, [{"mpid": 1, "source_request_id": "r1", "events": [ev()]}], at=T0 + 31 * DAY)
    assert later.stored_batches == 1


def test_request_ids_are_per_input(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "source_request_id": "r1", "events": [ev()]}], input_id=1)
    other = send(store, [{"mpid": 1, "source_request_id": "r1", "events": [ev()]}], input_id=2)
    assert other.stored_batches == 1


def test_message_id_counts_once_even_within_one_request(store: DuckDBStore) -> None:
    out = send(store, [{"mpid": 1, "events": [ev(source_message_id="m"), ev(source_message_id="m")]}])
    assert (out.stored_events, out.duplicate_events) == (1, 1)
    out2 = send(
        store, [{"mpid": 1, "events": [ev(source_message_id="m"), ev(source_message_id="n")]}], at=T0 + 1
    )
    assert (out2.stored_events, out2.duplicate_events) == (1, 1)


def test_resolution_by_priority_and_normalisation(store: DuckDBStore) -> None:
    send(store, [{"mpid": 10, "user_identities": {"email": " Ann@Example.COM ", "customer_id": "c1"}}])
    send(store, [{"mpid": 20, "user_identities": {"customer_id": "c2"}}])
    # email matches 10, customer_id matches 20: customer_id has priority.
    out = send(store, [{"user_identities": {"email": "ann@example.com", "customerid": "c2"}}], at=T0 + 1)
    assert out.mpids == (20,)
    out = send(store, [{"user_identities": {"email": "ANN@example.com"}}], at=T0 + 2)
    assert out.mpids == (10,)


def test_unknown_identities_get_a_fresh_mpid(store: DuckDBStore) -> None:
    out = send(
        store, [{"user_identities": {"email": "new@x.io"}}, {"user_identities": {"email": "new@x.io"}}]
    )
    a, b = out.mpids
    assert a == b and a != 0
    assert store.profile(a)["identities"] == {"email": "new@x.io"}


def test_identity_stays_with_its_owner(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "user_identities": {"email": "shared@x.io"}}])
    send(store, [{"mpid": 2, "user_identities": {"email": "shared@x.io"}}], at=T0 + 1)
    assert store.profile(1)["identities"] == {"email": "shared@x.io"}
    assert store.profile(2)["identities"] == {}


def test_new_value_of_an_identity_type_replaces_the_old(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "user_identities": {"email": "old@x.io"}}])
    send(store, [{"mpid": 1, "user_identities": {"email": "new@x.io"}}], at=T0 + 1)
    assert store.profile(1)["identities"] == {"email": "new@x.io"}
    # The released value can now belong to someone else.
    send(store, [{"mpid": 2, "user_identities": {"email": "old@x.io"}}], at=T0 + 2)
    assert store.profile(2)["identities"] == {"email": "old@x.io"}


def test_attributes_set_delete_and_null(store: DuckDBStore) -> None:
    send(
        store, [{"mpid": 1, "user_attributes": {"a": 1, "b": True, "c": "x", "d": ["p", "q"], "gone": None}}]
    )
    assert store.profile(1)["attributes"] == {"a": 1, "b": True, "c": "x", "d": ["p", "q"]}
    send(
        store,
        [{"mpid": 1, "user_attributes": {"a": None, "c": "y"}, "deleted_user_attributes": ["b"]}],
        at=T0 + 1,
    )
    assert store.profile(1)["attributes"] == {"c": "y", "d": ["p", "q"]}


def test_seen_times_are_receipt_times_and_only_for_production(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "events": [ev(timestamp_unixtime_ms=T0 - 5 * DAY)]}], at=T0)
    send(store, [{"mpid": 1, "environment": "development", "user_attributes": {"dev": 1}}], at=T0 + 5000)
    p = store.profile(1)
    assert (p["first_seen"], p["last_seen"]) == (T0, T0)
    assert "dev" not in p["attributes"]
    assert p["event_counts"] == {"realtime": 1, "development": 0, "historical": 0}


def test_historical_data_neither_sees_nor_updates(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "user_attributes": {"plan": "free"}}], at=T0)
    old = T0 - 10 * DAY
    send(
        store,
        [{"mpid": 1, "user_attributes": {"plan": "paid"}, "events": [ev(timestamp_unixtime_ms=old)]}],
        at=T0 + DAY,
        historical=True,
    )
    p = store.profile(1)
    assert p["attributes"] == {"plan": "free"}
    assert p["last_seen"] == T0
    assert p["event_counts"]["historical"] == 1 and p["event_counts"]["realtime"] == 0


def test_consent_keeps_the_latest_by_timestamp(store: DuckDBStore) -> None:
    def consent(flag: bool, ts: int) -> dict[str, Any]:
        return {
            "mpid": 1,
            "consent_state": {"gdpr": {"Marketing": {"consented": flag, "timestamp_unixtime_ms": ts}}},
        }

    send(store, [consent(True, T0)], at=T0)
    send(store, [consent(False, T0 - DAY)], at=T0 + 1)  # older statement arriving later loses
    assert store.profile(1)["consent"]["gdpr"]["marketing"]["consented"] is True
    send(store, [consent(False, T0 + 10)], at=T0 + 2)
    assert store.profile(1)["consent"]["gdpr"]["marketing"]["consented"] is False


def test_devices_keyed_by_device_ids(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1, "device_info": {"platform": "iOS", "ios_idfv": "A"}}])
    send(store, [{"mpid": 1, "device_info": {"platform": "Android", "android_uuid": "B"}}], at=T0 + 1)
    send(
        store,
        [{"mpid": 1, "device_info": {"platform": "iOS", "os_version": "18", "ios_idfv": "A"}}],
        at=T0 + 2,
    )
    send(store, [{"mpid": 1, "device_info": {"platform": "web"}}], at=T0 + 3)
    devices = {d["device_key"]: d for d in store.profile(1)["devices"]}
    assert set(devices) == {"ios_idfv:A", "android_uuid:B", ""}
    assert devices["ios_idfv:A"]["os_version"] == "18"


def test_inputs_a_user_sent_data_through(store: DuckDBStore) -> None:
    send(store, [{"mpid": 1}], input_id=3)
    send(store, [{"mpid": 1}], input_id=1, at=T0 + 1)
    send(store, [{"mpid": 1}], input_id=3, at=T0 + 2)
    assert store.profile(1)["input_ids"] == [1, 3]


def test_store_reopens_with_its_data_and_counters(tmp_path: Path) -> None:
    s = DuckDBStore(tmp_path / "s")
    send(s, [{"mpid": 1, "events": [ev(), ev()]}])
    s.close()
    s = DuckDBStore(tmp_path / "s")
    send(s, [{"mpid": 1, "events": [ev()]}], at=T0 + 1)
    ids = [r[0] for r in s.reader().execute("SELECT event_id FROM events ORDER BY event_id").fetchall()]
    s.close()
    assert ids == [1, 2, 3]


def test_message_ids_in_one_group_keep_the_first_event_sent(store: DuckDBStore) -> None:
    first = [{"mpid": 1, "events": [ev("a", source_message_id="m"), ev("b"), ev("c", source_message_id="m")]}]
    second = [{"mpid": 1, "events": [ev("d", source_message_id="n"), ev("e", source_message_id="m")]}]
    requests = [
        IngestRequest(1, T0 + i, normalize_request(body, bulk=True, historical=False, received_at=T0 + i)[0])
        for i, body in enumerate([first, second])
    ]
    plan = build_plan(requests, store, WINDOWS, random.Random(7))
    assert [(o.stored_events, o.duplicate_events) for o in plan.outcomes] == [(2, 1), (1, 1)]
    assert [e.name for _, _, _, rows in plan.events for e in rows] == ["a", "b", "d"]
    assert plan.message_keys == {(1, "m"): T0, (1, "n"): T0 + 1}
