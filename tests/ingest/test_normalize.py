"""Validation and normalisation of Events API bodies (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from milepost.errors import InvalidBatch
from milepost.ingest.normalize import normalize_request

NOW = 1_780_000_000_000


def norm(body: Any, *, bulk: bool = False, historical: bool = False):
    return normalize_request(body, bulk=bulk, historical=historical, received_at=NOW)


def errors_of(body: Any, **kw: Any) -> list[str]:
    with pytest.raises(InvalidBatch) as exc:
        norm(body, **kw)
    return exc.value.errors


def test_missing_timestamp_is_receipt_time_and_future_is_clamped() -> None:
    (b,), _ = norm(
        {
            "events": [
                {"event_type": "session_start", "data": {}},
                {"event_type": "session_start", "data": {"timestamp_unixtime_ms": NOW + 7_200_000}},
            ]
        }
    )
    assert [e.ts for e in b.events] == [NOW, NOW]
    assert b.events[1].data["original_timestamp_unixtime_ms"] == NOW + 7_200_000


def test_seconds_instead_of_milliseconds_is_refused() -> None:
    errs = errors_of(
        {"events": [{"event_type": "session_start", "data": {"timestamp_unixtime_ms": 1_700_000_000}}]}
    )
    assert errs == [
        "batch.events[0].data.timestamp_unixtime_ms: 1700000000 is before 2000-01-01; "
        "timestamps are milliseconds since the epoch, not seconds"
    ]


def test_bulk_lists_every_failing_batch() -> None:
    errs = errors_of([{"mpid": 1}, {"mpid": 0}, {"events": [{"event_type": "nope", "data": {}}]}], bulk=True)
    assert len(errs) == 2
    assert errs[0].startswith("batch[1].mpid:")
    assert errs[1].startswith("batch[2].events[0]:") and "'nope'" in errs[1]


def test_bulk_limits() -> None:
    assert errors_of([{}] * 101, bulk=True) == ["101 batches in one request; the limit is 100"]
    assert errors_of({"mpid": 1}, bulk=True) == ["the body must be a JSON array of batches"]


def test_custom_event_requires_name_and_type() -> None:
    errs = errors_of({"events": [{"event_type": "custom_event", "data": {"custom_event_type": "bogus"}}]})
    assert any("event_name" in e for e in errs)
    assert any("custom_event_type" in e for e in errs)


def test_identity_spellings_and_normalisation() -> None:
    (b,), _ = norm({"user_identities": {"customerid": " c7 ", "email": " A@B.io "}})
    assert b.identities == {"customer_id": ("c7", "c7"), "email": ("A@B.io", "a@b.io")}
    assert errors_of({"user_identities": {"shoe_size": "9"}}) == [
        "batch.user_identities.shoe_size: unknown identity type"
    ]


def test_mpid_forms() -> None:
    (b,), _ = norm({"mpid": "-42"})
    assert b.mpid == -42
    assert errors_of({"mpid": "abc"})[0].startswith("batch.mpid:")
    assert errors_of({"mpid": 2**63})[0].startswith("batch.mpid:")


def test_attribute_values_and_limits() -> None:
    attrs = {f"a{i}": i for i in range(105)}
    attrs["a0"] = "x" * 5000
    (b,), warnings = norm({"user_attributes": attrs | {"flag": True, "n": None}})
    assert len(b.attributes_set) == 100
    assert len(b.attributes_set["a0"]) == 4096
    assert any("attributes beyond the first 100 dropped" in w for w in warnings)
    assert any("value truncated to 4096" in w for w in warnings)
    (b,), warnings = norm({"user_attributes": {"x" * 300: [str(i) for i in range(1200)]}})
    ((name, value),) = b.attributes_set.items()
    assert len(name) == 256 and len(value) == 1000
    assert len(warnings) == 2


def test_commerce_fields_are_exact_decimals() -> None:
    (b,), _ = norm(
        {
            "events": [
                {
                    "event_type": "commerce_event",
                    "data": {
                        "product_action": {
                            "action": "purchase",
                            "total_amount": 0.1,
                            "products": [{"id": 1, "category": "Books"}],
                        }
                    },
                }
            ]
        }
    )
    e = b.events[0]
    assert e.action == "purchase" and e.total_amount == Decimal("0.1")
    assert e.products == [{"id": 1, "category": "Books"}]


def test_install_and_upgrade_flags() -> None:
    (b,), _ = norm(
        {
            "events": [
                {
                    "event_type": "application_state_transition",
                    "data": {"application_transition_type": "application_initialized", "is_first_run": True},
                },
                {
                    "event_type": "application_state_transition",
                    "data": {"application_transition_type": "application_initialized", "is_upgrade": True},
                },
                {"event_type": "first_run", "data": {}},
            ]
        }
    )
    assert [(e.is_install, e.is_upgrade) for e in b.events] == [(True, False), (False, True), (True, False)]


def test_historical_rules() -> None:
    assert errors_of([{"mpid": 1}], bulk=True, historical=True) == [
        "batch[0].events: a historical batch must hold at least one event"
    ]
    assert (
        "required for historical data"
        in errors_of(
            [{"mpid": 1, "events": [{"event_type": "session_start", "data": {}}]}], bulk=True, historical=True
        )[0]
    )
    recent = NOW - 3_600_000
    assert (
        "at least 72 hours old"
        in errors_of(
            [
                {
                    "mpid": 1,
                    "events": [{"event_type": "session_start", "data": {"timestamp_unixtime_ms": recent}}],
                }
            ],
            bulk=True,
            historical=True,
        )[0]
    )


def test_unknown_fields_are_kept_and_mparticle_types_accepted() -> None:
    (b,), _ = norm(
        {
            "mpid": 1,
            "schema_version": 2,
            "events": [
                {"event_type": "pre_attribution", "data": {"x": 1}},
                {"event_type": "push_reaction", "data": {}},
            ],
        }
    )
    assert b.body["schema_version"] == 2
    assert [e.event_type for e in b.events] == ["pre_attribution", "push_reaction"]


def test_custom_attributes_reject_nested_values() -> None:
    errs = errors_of(
        {
            "events": [
                {
                    "event_type": "custom_event",
                    "data": {
                        "event_name": "x",
                        "custom_event_type": "other",
                        "custom_attributes": {"a": {"b": 1}},
                    },
                }
            ]
        }
    )
    assert errs[0].startswith("batch.events[0].data.custom_attributes.a")
