"""The Events API contract of SPEC §3, end to end against a real `milepost serve` process."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.conftest import Api, custom_event, error_messages, now_ms
from tests.support.server import running_server

pytestmark = pytest.mark.api

HOUR_MS = 3_600_000
ENDPOINTS = ["/v2/events", "/v2/bulkevents", "/v2/bulkevents/historical"]


def _wrap(path: str, batch: Any) -> Any:
    return batch if path == "/v2/events" else [batch]


# ---- 202 ------------------------------------------------------------------------------------


def test_single_batch_is_accepted_with_an_empty_202_and_lands_on_the_profile(api: Api) -> None:
    mpid = api.mpid()
    before = now_ms()
    resp = api.send({"mpid": mpid, "user_attributes": {"plan": "gold"}, "events": [custom_event("Opened")]})
    after = now_ms()
    assert resp.status_code == 202
    assert resp.content == b""
    prof = api.profile(mpid)
    assert prof["mpid"] == mpid
    assert prof["attributes"] == {"plan": "gold"}
    assert prof["event_counts"] == {"realtime": 1, "development": 0, "historical": 0}
    assert before <= prof["first_seen"] == prof["last_seen"] <= after
    assert [e["name"] for e in prof["recent_events"]] == ["Opened"]
    assert [i["id"] for i in prof["inputs"]] == [api.input["id"]]


def test_mpid_as_numeric_string_is_accepted(api: Api) -> None:
    mpid = api.mpid()
    api.accept({"mpid": str(mpid), "user_attributes": {"via": "string"}})
    assert api.profile(mpid)["attributes"] == {"via": "string"}


def test_bulk_accepts_every_batch(api: Api) -> None:
    mpids = [api.mpid() for _ in range(3)]
    api.accept([{"mpid": m, "events": [custom_event(f"e{m}")]} for m in mpids], "/v2/bulkevents")
    for m in mpids:
        prof = api.profile(m)
        assert prof["event_counts"]["realtime"] == 1
        assert prof["recent_events"][0]["name"] == f"e{m}"


def test_bulk_of_exactly_100_batches_is_accepted(api: Api) -> None:
    mpids = [api.mpid() for _ in range(100)]
    api.accept([{"mpid": m} for m in mpids], "/v2/bulkevents")
    assert api.profile(mpids[0])["first_seen"] is not None
    assert api.profile(mpids[-1])["first_seen"] is not None


# ---- 400 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_malformed_json_is_400(api: Api, path: str) -> None:
    resp = api.events.post(
        path, content=b'{"mpid": 1, "events": [', headers={"Content-Type": "application/json"}
    )
    msgs = error_messages(resp, 400)
    assert any("JSON" in m for m in msgs), msgs


def _good(mpid: int) -> dict[str, Any]:
    return {"mpid": mpid, "user_attributes": {"ok": True}, "events": [custom_event()]}


# (mutation of a valid batch, the field path the message must name)
BAD_BATCHES: list[tuple[str, dict[str, Any], str]] = [
    ("mpid_list", {"mpid": [5]}, "mpid"),
    ("mpid_zero", {"mpid": 0}, "mpid"),
    ("mpid_zero_string", {"mpid": "0"}, "mpid"),
    ("mpid_not_numeric", {"mpid": "abc"}, "mpid"),
    ("attributes_object", {"user_attributes": {"a": {"nested": 1}}}, "user_attributes.a"),
    ("attributes_list", {"user_attributes": ["a"]}, "user_attributes"),
    ("unknown_event_type", {"events": [{"event_type": "made_up", "data": {}}]}, "events[0]"),
    (
        "custom_event_without_name",
        {"events": [{"event_type": "custom_event", "data": {"custom_event_type": "other"}}]},
        "events[0].data.event_name",
    ),
    (
        "custom_event_without_type",
        {"events": [{"event_type": "custom_event", "data": {"event_name": "x"}}]},
        "events[0].data.custom_event_type",
    ),
    (
        "custom_event_bad_type",
        {
            "events": [
                {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "weird"}}
            ]
        },
        "events[0].data.custom_event_type",
    ),
    (
        "timestamp_in_seconds",
        {"events": [custom_event(timestamp_unixtime_ms=int(time.time()))]},
        "events[0].data.timestamp_unixtime_ms",
    ),
    ("environment_unknown", {"environment": "staging"}, "environment"),
    ("events_not_list", {"events": {"event_type": "custom_event"}}, "events"),
    ("unknown_identity_type", {"user_identities": {"shoe_size": "42"}}, "user_identities.shoe_size"),
]


@pytest.mark.parametrize(
    ("mutation", "field_path"), [(m, f) for _, m, f in BAD_BATCHES], ids=[n for n, _, _ in BAD_BATCHES]
)
def test_bad_batch_in_bulk_is_400_naming_index_and_field_and_nothing_is_stored(
    api: Api, mutation: dict[str, Any], field_path: str
) -> None:
    ok_mpid, bad_mpid = api.mpid(), api.mpid()
    bad = {**_good(bad_mpid), **mutation}
    resp = api.send([_good(ok_mpid), bad], "/v2/bulkevents")
    msgs = error_messages(resp, 400)
    assert any(m.startswith(f"batch[1].{field_path}") for m in msgs), msgs
    assert not any(m.startswith("batch[0]") for m in msgs), msgs
    assert api.absent(ok_mpid), "bulk is all-or-nothing: the valid batch must not be stored"
    assert api.absent(bad_mpid)


@pytest.mark.parametrize(
    ("mutation", "field_path"), [(m, f) for _, m, f in BAD_BATCHES], ids=[n for n, _, _ in BAD_BATCHES]
)
def test_bad_single_batch_is_400_naming_the_field(
    api: Api, mutation: dict[str, Any], field_path: str
) -> None:
    mpid = api.mpid()
    resp = api.send({**_good(mpid), **mutation})
    msgs = error_messages(resp, 400)
    assert any(m.startswith(f"batch.{field_path}") for m in msgs), msgs
    assert api.absent(mpid)


def test_bulk_400_lists_every_failing_batch_and_stores_nothing(api: Api) -> None:
    mpids = [api.mpid() for _ in range(4)]
    batches = [
        _good(mpids[0]),
        {**_good(mpids[1]), "mpid": 0},
        _good(mpids[2]),
        {**_good(mpids[3]), "events": [{"event_type": "nope"}]},
    ]
    msgs = error_messages(api.send(batches, "/v2/bulkevents"), 400)
    assert any(m.startswith("batch[1].mpid") for m in msgs), msgs
    assert any(m.startswith("batch[3].events[0]") for m in msgs), msgs
    assert not any(m.startswith(("batch[0]", "batch[2]")) for m in msgs), msgs
    for m in mpids:
        assert api.absent(m)


def test_101_batches_is_400_and_nothing_is_stored(api: Api) -> None:
    mpids = [api.mpid() for _ in range(101)]
    msgs = error_messages(api.send([{"mpid": m} for m in mpids], "/v2/bulkevents"), 400)
    assert any("101" in m and "100" in m for m in msgs), msgs
    assert api.absent(mpids[0])


@pytest.mark.parametrize(
    "body", [{"mpid": 5}, "batches", 7, None], ids=["object", "string", "number", "null"]
)
def test_bulk_body_that_is_not_an_array_is_400(api: Api, body: Any) -> None:
    resp = api.events.post(
        "/v2/bulkevents", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    msgs = error_messages(resp, 400)
    assert any("array" in m for m in msgs), msgs


def test_bulk_with_no_batches_is_400(api: Api) -> None:
    error_messages(api.send([], "/v2/bulkevents"), 400)


def test_single_endpoint_refuses_an_array(api: Api) -> None:
    mpid = api.mpid()
    msgs = error_messages(api.send([{"mpid": mpid}]), 400)
    assert any("object" in m for m in msgs), msgs
    assert api.absent(mpid)


def test_bulk_item_that_is_not_an_object_is_400_naming_its_index(api: Api) -> None:
    mpid = api.mpid()
    msgs = error_messages(api.send([{"mpid": mpid}, 5], "/v2/bulkevents"), 400)
    assert any(m.startswith("batch[1]") for m in msgs), msgs
    assert api.absent(mpid)


# ---- 413 ------------------------------------------------------------------------------------


def _oversized(mpid: int) -> bytes:
    body = httpx.Request(
        "POST", "/", json={"mpid": mpid, "user_attributes": {"blob": "x" * (300 * 1024)}}
    ).content
    assert len(body) > 256 * 1024
    return body


@pytest.mark.parametrize("path", ["/v2/events", "/v2/bulkevents"])
def test_body_over_256_kb_is_413(api: Api, path: str) -> None:
    mpid = api.mpid()
    body = _oversized(mpid)
    if path != "/v2/events":
        body = b"[" + body + b"]"
    resp = api.events.post(path, content=body, headers={"Content-Type": "application/json"})
    error_messages(resp, 413)
    assert api.absent(mpid)


def test_chunked_body_over_256_kb_is_413(api: Api) -> None:
    mpid = api.mpid()
    body = _oversized(mpid)

    def chunks() -> Any:
        for i in range(0, len(body), 16 * 1024):
            yield body[i : i + 16 * 1024]

    resp = api.events.post("/v2/events", content=chunks(), headers={"Content-Type": "application/json"})
    error_messages(resp, 413)
    assert api.absent(mpid)


def test_body_just_under_256_kb_is_accepted(api: Api) -> None:
    mpid = api.mpid()
    # 200 KB of attribute values, each under the 4096-character limit.
    attrs = {f"a{i}": "y" * 4000 for i in range(50)}
    api.accept({"mpid": mpid, "user_attributes": attrs})
    assert api.profile(mpid)["attributes"] == attrs


# ---- 401 / 403 ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_authorization_is_401(api: Api, path: str) -> None:
    mpid = api.mpid()
    resp = httpx.post(api.server.url + path, json=_wrap(path, _good(mpid)))
    error_messages(resp, 401)
    assert api.absent(mpid)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_401_asks_for_basic_and_is_counted_as_rejected(api: Api, path: str) -> None:
    def rejected() -> int:
        metrics = api.admin.get("/metrics").text
        line = 'milepost_ingest_requests_rejected_total{reason="UNAUTHORIZED"} '
        return sum(int(m.removeprefix(line)) for m in metrics.splitlines() if m.startswith(line))

    before = rejected()
    resp = httpx.post(api.server.url + path, json=_wrap(path, _good(api.mpid())))
    error_messages(resp, 401)
    assert resp.headers["www-authenticate"] == 'Basic realm="milepost"'
    assert rejected() == before + 1


@pytest.mark.parametrize("path", ENDPOINTS)
def test_other_methods_and_a_trailing_slash_are_not_uploads(api: Api, path: str) -> None:
    error_messages(api.events.get(path), 405)
    resp = api.events.post(path + "/", json=_wrap(path, _good(api.mpid())))
    assert resp.status_code != 202


def test_non_basic_authorization_is_401(api: Api) -> None:
    resp = httpx.post(
        api.server.url + "/v2/events",
        json=_good(api.mpid()),
        headers={"Authorization": f"Bearer {api.creds['admin_token']}"},
    )
    error_messages(resp, 401)


def test_wrong_secret_is_403(api: Api) -> None:
    mpid = api.mpid()
    with api.client_for(api.input["key"], api.input["secret"] + "x") as c:
        error_messages(c.post("/v2/events", json=_good(mpid)), 403)
    assert api.absent(mpid)


def test_unknown_key_is_403(api: Api) -> None:
    mpid = api.mpid()
    with api.client_for("no-such-key", api.input["secret"]) as c:
        error_messages(c.post("/v2/bulkevents", json=[_good(mpid)]), 403)
    assert api.absent(mpid)


def test_basic_credentials_without_colon_are_refused(api: Api) -> None:
    token = base64.b64encode(api.input["key"].encode()).decode()
    resp = httpx.post(
        api.server.url + "/v2/events", json=_good(api.mpid()), headers={"Authorization": f"Basic {token}"}
    )
    assert resp.status_code in (401, 403)
    error_messages(resp, resp.status_code)


def test_disabled_input_is_403_and_its_data_stays(api: Api) -> None:
    inp = api.create_input("disabled-later")
    mpid = api.mpid()
    with api.client_for(inp["key"], inp["secret"]) as c:
        assert (
            c.post(
                "/v2/events", json={"mpid": mpid, "user_attributes": {"k": 1}, "events": [custom_event()]}
            ).status_code
            == 202
        )
        resp = api.admin.patch(f"/api/v1/inputs/{inp['id']}", json={"enabled": False})
        assert resp.status_code == 200, resp.text
        assert resp.json()["enabled"] is False
        for path in ENDPOINTS:
            error_messages(c.post(path, json=_wrap(path, {"mpid": mpid, "events": [custom_event()]})), 403)
        prof = api.profile(mpid)
        assert prof["attributes"] == {"k": 1}
        assert prof["event_counts"]["realtime"] == 1
        assert inp["id"] in [i["id"] for i in prof["inputs"]]
        # Enabling it again lets it send.
        assert api.admin.patch(f"/api/v1/inputs/{inp['id']}", json={"enabled": True}).status_code == 200
        assert c.post("/v2/events", json={"mpid": mpid, "events": [custom_event()]}).status_code == 202
    assert api.profile(mpid)["event_counts"]["realtime"] == 2


# ---- 429 ------------------------------------------------------------------------------------


def test_over_the_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    with running_server(tmp_path, {"MILEPOST_INPUT_RATE_LIMIT": "1"}) as (srv, creds):
        inp = creds["input"]
        with (
            httpx.Client(base_url=srv.url, auth=(inp["key"], inp["secret"]), timeout=30) as c,
            httpx.Client(
                base_url=srv.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}
            ) as admin,
        ):
            results = []
            for mpid in range(1, 9):
                results.append(
                    (mpid, c.post("/v2/events", json={"mpid": mpid, "user_attributes": {"n": mpid}}))
                )
            statuses = [r.status_code for _, r in results]
            assert set(statuses) == {202, 429}, statuses
            assert statuses[0] == 202  # the burst (2 × rate) is available at first
            limited = [(m, r) for m, r in results if r.status_code == 429]
            for mpid, resp in limited:
                error_messages(resp, 429)
                retry_after = resp.headers.get("Retry-After")
                assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, (
                    resp.headers
                )
                assert admin.get(f"/api/v1/users/{mpid}").status_code == 404, (
                    "a refused batch must not be stored"
                )
            for mpid, resp in results:
                if resp.status_code == 202:
                    assert admin.get(f"/api/v1/users/{mpid}").json()["attributes"] == {"n": mpid}
            # A bulk request costs one token per batch: more batches than the burst are refused at once.
            error_messages(c.post("/v2/bulkevents", json=[{"mpid": 100 + i} for i in range(5)]), 429)
            # After waiting as told, the input may send again.
            time.sleep(int(limited[-1][1].headers["Retry-After"]) + 0.2)
            assert c.post("/v2/events", json={"mpid": 99, "user_attributes": {"n": 99}}).status_code == 202
            assert admin.get("/api/v1/users/99").json()["attributes"] == {"n": 99}


# ---- de-duplication -------------------------------------------------------------------------


def test_duplicate_source_request_id_is_acknowledged_and_dropped(api: Api) -> None:
    mpid = api.mpid()
    batch = {
        "mpid": mpid,
        "source_request_id": f"req-{mpid}",
        "user_attributes": {"v": 1},
        "events": [custom_event()],
    }
    api.accept(batch)
    first = api.profile(mpid)
    assert first["event_counts"]["realtime"] == 1
    time.sleep(0.01)
    api.accept({**batch, "user_attributes": {"v": 2}, "events": [custom_event(), custom_event()]})
    api.accept([{**batch, "user_attributes": {"v": 3}}], "/v2/bulkevents")
    again = api.profile(mpid)
    assert again["event_counts"]["realtime"] == 1
    assert again["attributes"] == {"v": 1}
    assert again["last_seen"] == first["last_seen"], "a dropped duplicate does not make the user seen"


def test_duplicate_source_request_id_within_one_bulk_keeps_the_first(api: Api) -> None:
    mpid = api.mpid()
    rid = f"req-bulk-{mpid}"
    api.accept(
        [
            {"mpid": mpid, "source_request_id": rid, "events": [custom_event("first")]},
            {"mpid": mpid, "source_request_id": rid, "events": [custom_event("second")]},
        ],
        "/v2/bulkevents",
    )
    prof = api.profile(mpid)
    assert [e["name"] for e in prof["recent_events"]] == ["first"]


def test_source_request_id_is_remembered_per_input(api: Api) -> None:
    other = api.create_input("second-input-for-dedupe")
    mpid = api.mpid()
    batch = {"mpid": mpid, "source_request_id": f"shared-{mpid}", "events": [custom_event()]}
    api.accept(batch)
    with api.client_for(other["key"], other["secret"]) as c:
        assert c.post("/v2/events", json=batch).status_code == 202
    prof = api.profile(mpid)
    assert prof["event_counts"]["realtime"] == 2
    assert {i["id"] for i in prof["inputs"]} == {api.input["id"], other["id"]}


def test_duplicate_source_message_id_is_counted_once(api: Api) -> None:
    mpid = api.mpid()
    smid = f"msg-{mpid}"
    api.accept({"mpid": mpid, "events": [custom_event("a", source_message_id=smid), custom_event("b")]})
    api.accept({"mpid": mpid, "events": [custom_event("a", source_message_id=smid), custom_event("c")]})
    api.accept(
        {
            "mpid": mpid,
            "events": [
                custom_event("d", source_message_id=f"{smid}-2"),
                custom_event("d", source_message_id=f"{smid}-2"),
            ],
        }
    )
    prof = api.profile(mpid)
    assert prof["event_counts"]["realtime"] == 4
    assert sorted(e["name"] for e in prof["recent_events"]) == ["a", "b", "c", "d"]


# ---- identities -----------------------------------------------------------------------------


def test_customerid_and_customer_id_are_the_same_identity(api: Api) -> None:
    mpid = api.mpid()
    cid = f"cust-{mpid}"
    api.accept({"mpid": mpid, "user_identities": {"customerid": cid}})
    assert api.profile(mpid)["identities"] == {"customer_id": cid}
    api.accept(
        {"user_identities": {"customer_id": f"  {cid} "}, "user_attributes": {"found": "by customer_id"}}
    )
    prof = api.profile(mpid)
    assert prof["attributes"] == {"found": "by customer_id"}
    assert prof["identities"] == {"customer_id": cid}


def test_resolution_by_email_is_trimmed_and_case_insensitive(api: Api) -> None:
    mpid = api.mpid()
    api.accept({"mpid": mpid, "user_identities": {"email": f"Bob.{mpid}@Example.com"}})
    api.accept(
        {"user_identities": {"email": f"  BOB.{mpid}@EXAMPLE.COM  "}, "user_attributes": {"found": True}}
    )
    prof = api.profile(mpid)
    assert prof["attributes"] == {"found": True}
    assert prof["identities"]["email"].lower() == f"bob.{mpid}@example.com"


def test_resolution_follows_the_priority_order(api: Api) -> None:
    by_cid, by_email = api.mpid(), api.mpid()
    api.accept({"mpid": by_email, "user_identities": {"email": f"prio-{by_email}@x.io"}})
    api.accept({"mpid": by_cid, "user_identities": {"customer_id": f"prio-{by_cid}"}})
    api.accept(
        {
            "user_identities": {"email": f"prio-{by_email}@x.io", "customer_id": f"prio-{by_cid}"},
            "user_attributes": {"winner": "customer_id"},
        }
    )
    assert api.profile(by_cid)["attributes"] == {"winner": "customer_id"}
    assert api.profile(by_email)["attributes"] == {}


def test_an_identity_owned_by_another_profile_stays_there(api: Api) -> None:
    owner, other = api.mpid(), api.mpid()
    email = f"carol-{owner}@x.io"
    api.accept({"mpid": owner, "user_identities": {"email": email}})
    api.accept({"mpid": other, "user_identities": {"email": email, "other": f"o-{other}"}})
    assert api.profile(owner)["identities"] == {"email": email}
    assert api.profile(other)["identities"] == {"other": f"o-{other}"}
    api.accept({"user_identities": {"email": email}, "user_attributes": {"resolved": "owner"}})
    assert api.profile(owner)["attributes"] == {"resolved": "owner"}
    assert "resolved" not in api.profile(other)["attributes"]


def test_batch_without_mpid_or_known_identity_makes_a_new_profile(api: Api) -> None:
    email = f"new-{api.mpid()}@x.io"
    api.accept({"user_identities": {"email": email}, "user_attributes": {"n": 1}})
    # The new profile owns the identity: a later batch with an explicit other MPID cannot take it.
    other = api.mpid()
    api.accept({"mpid": other, "user_identities": {"email": email}})
    assert "email" not in api.profile(other)["identities"]


# ---- attributes -----------------------------------------------------------------------------


def test_numeric_boolean_and_list_attribute_values_keep_their_types(api: Api) -> None:
    mpid = api.mpid()
    attrs = {"n": 42, "f": 1.5, "neg": -3, "yes": True, "no": False, "s": "42", "l": ["a", 1, True]}
    api.accept({"mpid": mpid, "user_attributes": attrs})
    got = api.profile(mpid)["attributes"]
    assert got == attrs
    assert type(got["n"]) is int and type(got["yes"]) is bool and type(got["s"]) is str


def test_null_attribute_and_deleted_user_attributes_remove(api: Api) -> None:
    mpid = api.mpid()
    api.accept({"mpid": mpid, "user_attributes": {"a": 1, "b": 2, "c": 3, "d": 4}})
    api.accept(
        {"mpid": mpid, "user_attributes": {"a": None, "e": 5}, "deleted_user_attributes": ["b", "missing"]}
    )
    assert api.profile(mpid)["attributes"] == {"c": 3, "d": 4, "e": 5}


def test_null_attribute_on_a_new_profile_is_not_stored(api: Api) -> None:
    mpid = api.mpid()
    api.accept({"mpid": mpid, "user_attributes": {"gone": None, "kept": "yes"}})
    assert api.profile(mpid)["attributes"] == {"kept": "yes"}


# ---- timestamps -----------------------------------------------------------------------------


def test_missing_timestamp_is_the_receipt_time(api: Api) -> None:
    mpid = api.mpid()
    before = now_ms()
    api.accept({"mpid": mpid, "events": [custom_event("no-ts")]})
    after = now_ms()
    ev = api.profile(mpid)["recent_events"][0]
    assert before <= ev["timestamp_unixtime_ms"] <= after


def test_given_timestamp_is_kept(api: Api) -> None:
    mpid = api.mpid()
    ts = now_ms() - 5 * HOUR_MS
    near_future = now_ms() + HOUR_MS // 2
    api.accept(
        {
            "mpid": mpid,
            "events": [
                custom_event("past", timestamp_unixtime_ms=ts),
                custom_event("soon", timestamp_unixtime_ms=near_future),
            ],
        }
    )
    by_name = {e["name"]: e for e in api.profile(mpid)["recent_events"]}
    assert by_name["past"]["timestamp_unixtime_ms"] == ts
    assert by_name["soon"]["timestamp_unixtime_ms"] == near_future


def test_timestamp_more_than_an_hour_ahead_is_replaced_by_receipt_and_kept(api: Api) -> None:
    mpid = api.mpid()
    future = now_ms() + 3 * HOUR_MS
    before = now_ms()
    api.accept({"mpid": mpid, "events": [custom_event("future", timestamp_unixtime_ms=future)]})
    after = now_ms()
    ev = api.profile(mpid)["recent_events"][0]
    assert before <= ev["timestamp_unixtime_ms"] <= after
    assert ev["data"]["original_timestamp_unixtime_ms"] == future


# ---- development data -----------------------------------------------------------------------


def test_development_batches_are_stored_but_never_make_a_user_seen(api: Api) -> None:
    mpid = api.mpid()
    dev = {
        "mpid": mpid,
        "environment": "development",
        "user_attributes": {"dev": True},
        "events": [custom_event("dev")],
    }
    api.accept(dev)
    prof = api.profile(mpid)
    assert prof["first_seen"] is None and prof["last_seen"] is None
    assert prof["attributes"] == {}
    assert prof["event_counts"] == {"realtime": 0, "development": 1, "historical": 0}
    assert prof["inputs"] == []

    before = now_ms()
    api.accept({"mpid": mpid, "user_attributes": {"prod": 1}, "events": [custom_event("prod")]})
    after = now_ms()
    seen = api.profile(mpid)
    assert before <= seen["first_seen"] == seen["last_seen"] <= after
    assert seen["attributes"] == {"prod": 1}

    time.sleep(0.01)
    api.accept([{**dev, "user_attributes": {"prod": 2, "dev": True}}], "/v2/bulkevents")
    later = api.profile(mpid)
    assert later["first_seen"] == seen["first_seen"]
    assert later["last_seen"] == seen["last_seen"]
    assert later["attributes"] == {"prod": 1}
    assert later["event_counts"] == {"realtime": 1, "development": 2, "historical": 0}


# ---- historical data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "field_path"),
    [
        ({"events": []}, "events"),
        ({}, "events"),
        ({"events": [custom_event("no-ts")]}, "events[0].data.timestamp_unixtime_ms"),
        (
            {"events": [custom_event("recent", timestamp_unixtime_ms=now_ms() - 71 * HOUR_MS)]},
            "events[0].data.timestamp_unixtime_ms",
        ),
    ],
    ids=["no_events", "events_missing", "no_timestamp", "younger_than_72h"],
)
def test_historical_refuses_batches_that_are_not_old_enough(
    api: Api, batch: dict[str, Any], field_path: str
) -> None:
    ok_mpid, bad_mpid = api.mpid(), api.mpid()
    old = now_ms() - 100 * HOUR_MS
    good = {"mpid": ok_mpid, "events": [custom_event(timestamp_unixtime_ms=old)]}
    msgs = error_messages(api.send([good, {"mpid": bad_mpid, **batch}], "/v2/bulkevents/historical"), 400)
    assert any(m.startswith(f"batch[1].{field_path}") for m in msgs), msgs
    assert api.absent(ok_mpid) and api.absent(bad_mpid)


def test_historical_data_is_stored_for_analysis_only(api: Api) -> None:
    mpid = api.mpid()
    api.accept(
        {
            "mpid": mpid,
            "user_attributes": {"tier": "live"},
            "user_identities": {"email": f"hist-{mpid}@x.io"},
            "consent_state": {
                "gdpr": {"marketing": {"consented": True, "timestamp_unixtime_ms": now_ms() - 1000}}
            },
            "device_info": {"platform": "iOS", "ios_idfv": f"idfv-{mpid}"},
            "events": [custom_event("live")],
        }
    )
    live = api.profile(mpid)
    time.sleep(0.01)
    old = now_ms() - 80 * HOUR_MS
    api.accept(
        [
            {
                "mpid": mpid,
                "user_attributes": {"tier": "historical", "extra": 1},
                "user_identities": {"email": f"hist-other-{mpid}@x.io", "customer_id": f"hist-{mpid}"},
                "consent_state": {
                    "gdpr": {"marketing": {"consented": False, "timestamp_unixtime_ms": now_ms()}}
                },
                "device_info": {"platform": "Android", "android_uuid": f"uuid-{mpid}"},
                "events": [
                    custom_event("old", timestamp_unixtime_ms=old),
                    custom_event("older", timestamp_unixtime_ms=old - 1),
                ],
            }
        ],
        "/v2/bulkevents/historical",
    )
    prof = api.profile(mpid)
    assert prof["event_counts"] == {"realtime": 1, "development": 0, "historical": 2}
    assert prof["last_seen"] == live["last_seen"]
    assert prof["first_seen"] == live["first_seen"]
    assert prof["attributes"] == {"tier": "live"}
    assert prof["identities"] == live["identities"]
    assert prof["consent"] == live["consent"]
    assert prof["devices"] == live["devices"]
    assert [e["name"] for e in prof["recent_events"]] == ["live"]


def test_historical_data_for_a_new_user_does_not_make_it_seen(api: Api) -> None:
    mpid = api.mpid()
    api.accept(
        [{"mpid": mpid, "events": [custom_event(timestamp_unixtime_ms=now_ms() - 90 * HOUR_MS)]}],
        "/v2/bulkevents/historical",
    )
    prof = api.profile(mpid)
    assert prof["first_seen"] is None and prof["last_seen"] is None
    assert prof["event_counts"]["historical"] == 1


# ---- limits and warnings --------------------------------------------------------------------


def test_long_names_and_values_are_truncated_and_reported(api: Api) -> None:
    mpid = api.mpid()
    long_name, long_value = "n" * 300, "v" * 5000
    resp = api.accept(
        {
            "mpid": mpid,
            "user_attributes": {long_name: "x", "big": long_value},
            "events": [custom_event("e" * 400, custom_attributes={"c": long_value})],
        }
    )
    warnings = resp.headers.get("X-Milepost-Warnings")
    assert warnings is not None
    assert "user_attributes" in warnings and "truncated" in warnings
    assert "event_name" in warnings and "custom_attributes" in warnings
    prof = api.profile(mpid)
    assert prof["attributes"] == {"n" * 256: "x", "big": "v" * 4096}
    ev = prof["recent_events"][0]
    assert ev["name"] == "e" * 256
    assert ev["data"]["custom_attributes"] == {"c": "v" * 4096}


def test_attributes_and_list_items_beyond_the_limits_are_dropped_and_reported(api: Api) -> None:
    mpid = api.mpid()
    attrs: dict[str, Any] = {f"a{i:03d}": i for i in range(105)}
    attrs["a000"] = list(range(1200))
    resp = api.accept({"mpid": mpid, "user_attributes": attrs})
    warnings = resp.headers.get("X-Milepost-Warnings", "")
    assert "5 attributes beyond the first 100 dropped" in warnings
    assert "1000" in warnings
    got = api.profile(mpid)["attributes"]
    assert len(got) == 100
    assert got["a000"] == list(range(1000))
    assert "a104" not in got


def test_no_warnings_header_when_nothing_is_changed(api: Api) -> None:
    resp = api.accept({"mpid": api.mpid(), "user_attributes": {"short": "v" * 4096, "n" * 256: 1}})
    assert "X-Milepost-Warnings" not in resp.headers


# ---- consent and devices --------------------------------------------------------------------


def _consent(regulation: str, purpose: str, consented: bool, ts: int) -> dict[str, Any]:
    return {
        regulation: {purpose: {"consented": consented, "timestamp_unixtime_ms": ts, "document": f"doc-{ts}"}}
    }


def test_consent_keeps_the_latest_by_timestamp(api: Api) -> None:
    mpid = api.mpid()
    t = now_ms() - 10 * HOUR_MS
    api.accept({"mpid": mpid, "consent_state": _consent("gdpr", "marketing", True, t + 2000)})
    api.accept(
        {"mpid": mpid, "consent_state": _consent("gdpr", "marketing", False, t + 1000)}
    )  # older: ignored
    gdpr = api.profile(mpid)["consent"]["gdpr"]["marketing"]
    assert gdpr["consented"] is True and gdpr["timestamp_unixtime_ms"] == t + 2000
    api.accept({"mpid": mpid, "consent_state": _consent("gdpr", "marketing", False, t + 3000)})
    gdpr = api.profile(mpid)["consent"]["gdpr"]["marketing"]
    assert gdpr["consented"] is False and gdpr["timestamp_unixtime_ms"] == t + 3000
    assert gdpr["document"] == f"doc-{t + 3000}"

    # Within one bulk request too, the newest timestamp wins whatever the order.
    api.accept(
        [
            {"mpid": mpid, "consent_state": _consent("ccpa", "data_sale_opt_out", True, t + 9000)},
            {"mpid": mpid, "consent_state": _consent("ccpa", "data_sale_opt_out", False, t + 8000)},
        ],
        "/v2/bulkevents",
    )
    ccpa = api.profile(mpid)["consent"]["ccpa"]["data_sale_opt_out"]
    assert ccpa["consented"] is True and ccpa["timestamp_unixtime_ms"] == t + 9000


def test_consent_needs_a_boolean(api: Api) -> None:
    msgs = error_messages(
        api.send({"mpid": api.mpid(), "consent_state": {"gdpr": {"p": {"consented": "yes"}}}}), 400
    )
    assert any(m.startswith("batch.consent_state.gdpr.p.consented") for m in msgs), msgs


def test_devices_are_keyed_by_their_device_ids(api: Api) -> None:
    mpid = api.mpid()
    a, b = f"IDFV-A-{mpid}", f"IDFV-B-{mpid}"
    api.accept(
        {
            "mpid": mpid,
            "device_info": {
                "platform": "iOS",
                "ios_idfv": a,
                "device_model": "iPhone12,1",
                "os_version": "16.0",
            },
        }
    )
    api.accept({"mpid": mpid, "device_info": {"platform": "iOS", "ios_idfv": b, "device_model": "iPad8,1"}})
    api.accept({"mpid": mpid, "device_info": {"platform": "iOS", "ios_idfv": a, "os_version": "17.1"}})
    prof = api.profile(mpid)
    devices = {d["device_ids"].get("ios_idfv"): d for d in prof["devices"]}
    assert set(devices) == {a, b}
    assert devices[a]["os_version"] == "17.1"
    assert devices[a]["device_model"] == "iPhone12,1"
    assert devices[b]["device_model"] == "iPad8,1"
    assert {(d["type"], d["value"]) for d in prof["device_identities"]} == {("ios_idfv", a), ("ios_idfv", b)}

    # Reports without device ids update one unidentified device.
    api.accept({"mpid": mpid, "device_info": {"platform": "web", "device_model": "Firefox"}})
    api.accept({"mpid": mpid, "device_info": {"platform": "web", "device_model": "Chrome"}})
    devices = api.profile(mpid)["devices"]
    assert len(devices) == 3
    unidentified = [d for d in devices if not d["device_ids"]]
    assert len(unidentified) == 1 and unidentified[0]["device_model"] == "Chrome"


def test_device_id_resolves_a_batch_without_mpid(api: Api) -> None:
    mpid = api.mpid()
    adid = f"adid-{mpid}"
    api.accept({"mpid": mpid, "device_info": {"platform": "Android", "android_advertising_id": adid}})
    api.accept(
        {
            "device_info": {"platform": "Android", "android_advertising_id": adid},
            "user_attributes": {"via": "device"},
        }
    )
    assert api.profile(mpid)["attributes"] == {"via": "device"}


# ---- events ---------------------------------------------------------------------------------


def test_every_event_type_of_the_schema_is_accepted(api: Api) -> None:
    mpid = api.mpid()
    types = [
        "session_start", "session_end", "crash_report", "uninstall", "opt_out", "push_registration",
        "push_message", "push_reaction", "user_attribute_change", "user_identity_change", "breadcrumb",
        "network_performance", "first_run", "profile", "pre_attribution",
    ]  # fmt: skip
    events = [{"event_type": t, "data": {}} for t in types]
    events += [
        custom_event(),
        {"event_type": "screen_view", "data": {"screen_name": "Home"}},
        {
            "event_type": "application_state_transition",
            "data": {"application_transition_type": "application_initialized"},
        },
        {
            "event_type": "commerce_event",
            "data": {"product_action": {"action": "purchase", "total_amount": 9.99, "transaction_id": "t1"}},
        },
        {
            "event_type": "commerce_event",
            "data": {"promotion_action": {"action": "view", "promotions": [{"id": "p"}]}},
        },
        {"event_type": "commerce_event", "data": {"product_impressions": [{"product_impression_list": "l"}]}},
        {"event_type": "commerce_event", "data": {}},
    ]
    api.accept({"mpid": mpid, "events": events})
    assert api.profile(mpid)["event_counts"]["realtime"] == len(events)


def test_a_batch_with_only_attributes_makes_the_user_seen(api: Api) -> None:
    mpid = api.mpid()
    api.accept({"mpid": mpid, "consent_state": _consent("gdpr", "x", True, now_ms())})
    prof = api.profile(mpid)
    assert prof["first_seen"] is not None and prof["event_counts"]["realtime"] == 0


# ---- inputs that client data must never turn into a 500 ------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"product_action": {"action": "purchase", "total_amount": 1e30}},
        {"product_action": {"action": "purchase", "total_amount": 0.000000000001}},
        {"product_action": {"action": "purchase", "total_amount": 18446744073709551615}},
        {"product_action": {"action": "purchase", "total_amount": -(10**19) - 0.5}},
    ],
    ids=["total_too_large", "total_too_precise", "total_u64_max", "total_20_digits"],
)
def test_commerce_amount_outside_the_store_range_is_not_a_500(api: Api, data: dict[str, Any]) -> None:
    mpid = api.mpid()
    resp = api.send({"mpid": mpid, "events": [{"event_type": "commerce_event", "data": data}]})
    assert resp.status_code in (202, 400), resp.text
    if resp.status_code == 400:
        error_messages(resp, 400)
        assert api.absent(mpid)
    else:
        assert api.profile(mpid)["event_counts"]["realtime"] == 1


def test_event_timestamp_beyond_64_bits_is_not_a_500(api: Api) -> None:
    mpid = api.mpid()
    resp = api.send({"mpid": mpid, "events": [custom_event(timestamp_unixtime_ms=1e20)]})
    assert resp.status_code in (202, 400), resp.text
    if resp.status_code == 400:
        error_messages(resp, 400)


def test_consent_timestamp_beyond_64_bits_is_not_a_500(api: Api) -> None:
    mpid = api.mpid()
    resp = api.send(
        {"mpid": mpid, "consent_state": {"gdpr": {"p": {"consented": True, "timestamp_unixtime_ms": 1e20}}}}
    )
    assert resp.status_code in (202, 400), resp.text
    if resp.status_code == 400:
        error_messages(resp, 400)
