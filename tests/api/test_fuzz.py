"""Property tests: whatever a client sends to the Events API, the answer is 202, 400 or 413 (never 5xx),
every error has the documented shape, and every accepted batch can be read back."""

from __future__ import annotations

import copy
import itertools
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.api.conftest import Api, error_messages

pytestmark = pytest.mark.api

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ALLOWED = {202, 400, 413}
ENDPOINTS = st.sampled_from(["/v2/events", "/v2/bulkevents"])
# MPIDs given to generated batches: unique per example, far from anything a mutation produces by chance.
_MPIDS = itertools.count(7_300_000_000_000_000)
UNIQUE = "<unique>"
# De-duplication keys the server has accepted so far (SPEC §3): a batch or event reusing one is dropped.
_REQUEST_IDS: set[str] = set()
_MESSAGE_IDS: set[str] = set()
NOW_MS = int(time.time() * 1000)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
huge_strings = st.builds(
    lambda n, c: c * n, st.sampled_from([300, 4097, 20_000, 140_000, 300_000]), st.sampled_from("xé")
)
# Numbers at the edges of what JSON parsers and 64-bit/decimal columns hold.
edge_numbers = st.sampled_from(
    [
        0,
        -1,
        2**31,
        2**53 + 1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        1e20,
        1e30,
        -1e30,
        1e-12,
        1e308,
        0.1,
    ]
)
wrong_values = st.one_of(json_values, huge_strings, edge_numbers)


def _check_response(resp: httpx.Response) -> list[str]:
    assert resp.status_code in ALLOWED, (resp.status_code, resp.text[:500])
    if resp.status_code == 202:
        assert resp.content == b""
        return []
    return error_messages(resp, resp.status_code)


def _post(api: Api, path: str, content: bytes) -> httpx.Response:
    return api.events.post(path, content=content, headers={"Content-Type": "application/json"})


# ---- garbage --------------------------------------------------------------------------------


@FUZZ
@given(path=ENDPOINTS, body=st.binary(max_size=512))
def test_random_bytes_never_cause_a_server_error(api: Api, path: str, body: bytes) -> None:
    _check_response(_post(api, path, body))


@FUZZ
@given(path=ENDPOINTS, body=json_values)
def test_random_json_never_causes_a_server_error(api: Api, path: str, body: Any) -> None:
    _check_response(_post(api, path, json.dumps(body).encode()))


# ---- near-valid batches ---------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)
attr_values = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**53), 2**53),
    st.floats(-1e12, 1e12, allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.text(max_size=5), st.integers(-1000, 1000), st.booleans()), max_size=4),
)
timestamps = st.integers(0, 30 * 86_400_000).map(lambda age: NOW_MS - age)  # same draws on every run

custom_events = st.fixed_dictionaries(
    {
        "event_type": st.just("custom_event"),
        "data": st.fixed_dictionaries(
            {
                "event_name": names,
                "custom_event_type": st.sampled_from(
                    ["navigation", "search", "transaction", "other", "unknown"]
                ),
            },
            optional={
                "timestamp_unixtime_ms": timestamps,
                "custom_attributes": st.dictionaries(
                    names, attr_values.filter(lambda v: not isinstance(v, list)), max_size=3
                ),
            },
        ),
    }
)
purchases = st.fixed_dictionaries(
    {
        "event_type": st.just("commerce_event"),
        "data": st.fixed_dictionaries(
            {
                "product_action": st.fixed_dictionaries(
                    {"action": st.sampled_from(["purchase", "add_to_cart", "refund"])},
                    optional={
                        "total_amount": st.integers(0, 10**7).map(lambda c: c / 100),
                        "transaction_id": st.text(max_size=12),
                        "products": st.lists(
                            st.fixed_dictionaries(
                                {
                                    "id": st.text(max_size=6),
                                    "price": st.integers(0, 10**5),
                                    "quantity": st.integers(1, 9),
                                }
                            ),
                            max_size=2,
                        ),
                    },
                )
            },
            optional={"timestamp_unixtime_ms": timestamps, "currency_code": st.just("USD")},
        ),
    }
)
other_events = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(
            ["session_start", "session_end", "screen_view", "breadcrumb", "first_run"]
        ),
        "data": st.fixed_dictionaries(
            {}, optional={"timestamp_unixtime_ms": timestamps, "screen_name": names}
        ),
    }
)
events = st.lists(st.one_of(custom_events, purchases, other_events), max_size=3)

valid_batches = st.fixed_dictionaries(
    {},
    optional={
        "environment": st.sampled_from(["production", "development"]),
        "user_attributes": st.dictionaries(names, attr_values, max_size=5),
        "deleted_user_attributes": st.lists(names, max_size=2),
        "user_identities": st.fixed_dictionaries(
            {},
            optional={"customerid": st.uuids().map(str), "email": st.uuids().map(lambda u: f"{u}@fuzz.test")},
        ),
        "device_info": st.fixed_dictionaries(
            {"platform": st.sampled_from(["iOS", "Android", "web"])},
            optional={"ios_idfv": st.uuids().map(str)},
        ),
        "consent_state": st.fixed_dictionaries(
            {
                "gdpr": st.dictionaries(
                    st.sampled_from(["marketing", "analytics"]),
                    st.fixed_dictionaries({"consented": st.booleans(), "timestamp_unixtime_ms": timestamps}),
                    max_size=2,
                )
            }
        ),
        "source_request_id": st.just(UNIQUE),  # replaced by a value unique to the example
        "events": events,
    },
)

# Paths (into a batch) that mutations aim at; a missing intermediate is created.
PATHS: list[tuple[Any, ...]] = [
    ("mpid",),
    ("environment",),
    ("user_attributes",),
    ("user_attributes", "a"),
    ("deleted_user_attributes",),
    ("user_identities",),
    ("user_identities", "email"),
    ("user_identities", "customerid"),
    ("device_info",),
    ("device_info", "ios_idfv"),
    ("application_info",),
    ("application_info", "application_version"),
    ("consent_state",),
    ("consent_state", "gdpr"),
    ("consent_state", "gdpr", "marketing", "consented"),
    ("consent_state", "gdpr", "marketing", "timestamp_unixtime_ms"),
    ("consent_state", "ccpa", "data_sale_opt_out"),
    ("source_request_id",),
    ("events",),
    ("events", 0),
    ("events", 0, "event_type"),
    ("events", 0, "data"),
    ("events", 0, "data", "event_name"),
    ("events", 0, "data", "custom_event_type"),
    ("events", 0, "data", "timestamp_unixtime_ms"),
    ("events", 0, "data", "source_message_id"),
    ("events", 0, "data", "custom_attributes"),
    ("events", 0, "data", "custom_attributes", "k"),
    ("events", 0, "data", "product_action"),
    ("events", 0, "data", "product_action", "action"),
    ("events", 0, "data", "product_action", "total_amount"),
    ("events", 0, "data", "product_action", "products"),
]

NUMERIC_PATHS = [p for p in PATHS if p[-1] in ("mpid", "timestamp_unixtime_ms", "total_amount", "k", "a")]

mutations = st.one_of(
    st.none(),
    st.tuples(st.just("set"), st.sampled_from(NUMERIC_PATHS), edge_numbers),
    st.tuples(st.just("set"), st.sampled_from(PATHS), wrong_values),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(
        st.just("extra"),
        st.sampled_from([p[:-1] for p in PATHS]),
        st.tuples(st.text(max_size=10), json_values),
    ),
)


def _mutate(batch: dict[str, Any], mutation: tuple[str, tuple[Any, ...], Any] | None) -> dict[str, Any]:
    if mutation is None:
        return batch
    kind, path, value = mutation
    node: Any = batch
    for step in path[:-1] if kind != "extra" else path:
        if isinstance(step, int):
            if not isinstance(node, list) or not node:
                return batch  # nothing to mutate there
            node = node[step]
        else:
            if not isinstance(node, dict):
                return batch
            node = node.setdefault(step, {})
    if kind == "extra":
        if isinstance(node, dict):
            node[value[0]] = value[1]
        return batch
    last = path[-1]
    if isinstance(last, int):
        if isinstance(node, list) and node:
            if kind == "set":
                node[last] = value
            else:
                del node[last]
        return batch
    if isinstance(node, dict):
        if kind == "set":
            node[last] = value
        else:
            node.pop(last, None)
    return batch


def _build(base: dict[str, Any], mutation: Any) -> tuple[int, dict[str, Any]]:
    mpid = next(_MPIDS)
    batch = {"mpid": mpid, **copy.deepcopy(base)}
    if batch.get("source_request_id") == UNIQUE:
        batch["source_request_id"] = f"fuzz-request-{mpid}"
    return mpid, _mutate(batch, mutation)


def _check_visible(api: Api, mpid: int, batch: dict[str, Any]) -> None:
    """A batch that got a 202 must be readable: its profile, its events and its attributes."""
    request_id = batch.get("source_request_id")
    if request_id:
        if request_id in _REQUEST_IDS:
            assert api.absent(mpid), "a batch with an already accepted source_request_id is dropped"
            return
        _REQUEST_IDS.add(request_id)
    kept = 0
    for event in batch.get("events") or []:
        message_id = (event.get("data") or {}).get("source_message_id")
        if message_id:
            if message_id in _MESSAGE_IDS:
                continue
            _MESSAGE_IDS.add(message_id)
        kept += 1
    if batch.get("mpid") not in (mpid, str(mpid)):
        return
    prof = api.profile(mpid)
    counts = prof["event_counts"]
    assert counts["realtime"] + counts["development"] == kept, (counts, batch)
    if batch.get("environment", "production") == "development":
        assert counts["realtime"] == 0 and prof["first_seen"] is None
        return
    assert prof["first_seen"] is not None
    deleted = set(batch.get("deleted_user_attributes") or [])
    for name, value in (batch.get("user_attributes") or {}).items():
        if value is None or len(name) > 256 or name in deleted:
            continue
        if isinstance(value, str) and len(value) > 4096:
            assert prof["attributes"][name] == value[:4096]
        else:
            if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
                value = float(value)  # JSON parsers read integers beyond 64 bits as doubles
            assert prof["attributes"][name] == value, (name, value, prof["attributes"])


@FUZZ
@given(base=valid_batches, mutation=mutations)
def test_near_valid_single_batches(api: Api, base: dict[str, Any], mutation: Any) -> None:
    mpid, batch = _build(base, mutation)
    resp = api.events.post("/v2/events", json=batch)
    msgs = _check_response(resp)
    if mutation is None:
        assert resp.status_code == 202, (resp.text, batch)
    if resp.status_code == 202:
        _check_visible(api, mpid, batch)
    else:
        if resp.status_code == 400:
            assert all(m.startswith("batch") for m in msgs), msgs
        assert api.absent(mpid)


@FUZZ
@given(items=st.lists(st.tuples(valid_batches, mutations), min_size=1, max_size=4))
def test_near_valid_bulk_requests_are_all_or_nothing(
    api: Api, items: list[tuple[dict[str, Any], Any]]
) -> None:
    built = [_build(base, mutation) for base, mutation in items]
    resp = api.events.post("/v2/bulkevents", json=[b for _, b in built])
    msgs = _check_response(resp)
    if all(mutation is None for _, mutation in items):
        assert resp.status_code == 202, (resp.text, built)
    if resp.status_code == 202:
        for mpid, batch in built:
            _check_visible(api, mpid, batch)
        return
    if resp.status_code == 400:
        assert all(m.startswith("batch[") for m in msgs), msgs
        failing = {int(m[len("batch[") : m.index("]")]) for m in msgs}
        assert failing <= {i for i, (_, mutation) in enumerate(items) if mutation is not None}, (msgs, built)
    for mpid, _ in built:
        assert api.absent(mpid), "a refused bulk request must store nothing"


# ---- numbers at the edges, in every numeric field -------------------------------------------

EDGE_PATHS: list[tuple[Any, ...]] = [
    ("events", 0, "data", "product_action", "total_amount"),
    ("events", 0, "data", "product_action", "products", 0, "price"),
    ("events", 0, "data", "timestamp_unixtime_ms"),
    ("events", 1, "data", "timestamp_unixtime_ms"),
    ("events", 1, "data", "custom_attributes", "k"),
    ("consent_state", "gdpr", "marketing", "timestamp_unixtime_ms"),
    ("consent_state", "ccpa", "data_sale_opt_out", "timestamp_unixtime_ms"),
    ("user_attributes", "a"),
    ("user_identities", "customerid"),
    ("application_info", "application_version"),
]


def _numeric_batch() -> dict[str, Any]:
    return {
        "user_attributes": {"a": 1},
        "user_identities": {"other": "x"},
        "application_info": {"application_version": "1.0"},
        "consent_state": {
            "gdpr": {"marketing": {"consented": True, "timestamp_unixtime_ms": NOW_MS}},
            "ccpa": {"data_sale_opt_out": {"consented": False, "timestamp_unixtime_ms": NOW_MS}},
        },
        "events": [
            {
                "event_type": "commerce_event",
                "data": {
                    "product_action": {
                        "action": "purchase",
                        "total_amount": 10.5,
                        "products": [{"id": "p", "price": 10.5}],
                    }
                },
            },
            {
                "event_type": "custom_event",
                "data": {"event_name": "n", "custom_event_type": "other", "custom_attributes": {"k": 1}},
            },
        ],
    }


@FUZZ
@given(path=st.sampled_from(EDGE_PATHS), value=edge_numbers, bulk=st.booleans())
def test_edge_numbers_in_numeric_fields(api: Api, path: tuple[Any, ...], value: Any, bulk: bool) -> None:
    mpid, batch = _build(_numeric_batch(), ("set", path, value))
    resp = api.events.post("/v2/bulkevents" if bulk else "/v2/events", json=[batch] if bulk else batch)
    _check_response(resp)
    if resp.status_code == 202:
        _check_visible(api, mpid, batch)
    else:
        assert api.absent(mpid)
