"""The fast validation path must give exactly what the pydantic path gives, warnings and errors included."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from milepost.errors import InvalidBatch
from milepost.ingest import normalize
from milepost.ingest.normalize import normalize_request
from milepost.synthetic import realistic_bulk_requests, single_user_requests

NOW = 1_735_690_000_000

POOL: list[Any] = [
    None,
    "",
    "  x  ",
    "X" * 300,
    "v" * 5000,
    "123",
    0,
    1,
    -7,
    1.5,
    2**70,
    True,
    False,
    [],
    [1, "a"],
    [None],
    {},
    {"a": None},
    {"action": "purchase"},
    {"action": "view"},
    946_684_799_999,
    1_735_600_000_000,
    NOW + 7_200_000,
    1e30,
    "production",
    "development",
    "custom_event",
    "navigation",
    "session_start",
    [{"id": 1, "price": True}],
    {f"k{i}": i for i in range(120)},
]
KEYS = [
    "environment",
    "mpid",
    "user_identities",
    "user_attributes",
    "deleted_user_attributes",
    "device_info",
    "application_info",
    "consent_state",
    "source_request_id",
    "ip",
    "events",
    "event_type",
    "data",
    "timestamp_unixtime_ms",
    "source_message_id",
    "custom_attributes",
    "event_name",
    "custom_event_type",
    "screen_name",
    "product_action",
    "promotion_action",
    "product_impressions",
    "currency_code",
    "total_amount",
    "transaction_id",
    "products",
    "price",
    "id",
    "action",
    "customer_id",
    "customerid",
    "email",
    "platform",
    "ios_idfv",
    "app_version",
    "application_version",
    "is_first_run",
    "is_upgrade",
    "application_transition_type",
    "extra",
]


def _containers(value: Any) -> list[Any]:
    out: list[Any] = []
    if isinstance(value, dict):
        out.append(value)
        for v in value.values():
            out.extend(_containers(v))
    elif isinstance(value, list):
        out.append(value)
        for v in value:
            out.extend(_containers(v))
    return out


def _mutate(batch: Any, rng: random.Random) -> Any:
    batch = copy.deepcopy(batch)
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(_containers(batch))
        value = copy.deepcopy(rng.choice(POOL))
        if isinstance(target, dict):
            if target and rng.random() < 0.3:
                del target[rng.choice(list(target))]
            else:
                target[rng.choice(KEYS) if rng.random() < 0.7 else rng.choice([*target, "x"])] = value
        elif target:
            target[rng.randrange(len(target))] = value
    return batch


def _outcome(body: Any, historical: bool) -> Any:
    try:
        batches, warnings = normalize_request(body, bulk=True, historical=historical, received_at=NOW)
    except InvalidBatch as exc:
        return ("error", exc.errors)
    # The stored JSON text must match too, key order included.
    texts = [json.dumps(e.data) for b in batches for e in b.events]
    return ("ok", batches, warnings, texts)


def _slow(*_: Any) -> Any:
    raise normalize._Slow


def _samples() -> list[dict[str, Any]]:
    batches = [b for r in realistic_bulk_requests(seed=3, requests=2, batches_per_request=40) for b in r]
    batches += [b for r in single_user_requests(seed=4, requests=3, events_per_batch=30) for b in r]
    batches.append(
        {
            "mpid": "42",
            "device_info": {"platform": "iOS", "ios_idfv": " abc ", "app_version": 3},
            "application_info": {"application_version": "1.2"},
            "consent_state": {"gdpr": {"Ads": {"consented": True, "timestamp_unixtime_ms": NOW}}},
            "user_identities": {"customerid": " c1 ", "email": " A@B.C "},
            "events": [
                {"event_type": "application_state_transition", "data": {"is_first_run": True}},
                {"event_type": "first_run"},
                {"event_type": "commerce_event", "data": {"promotion_action": {"action": "click"}}},
                {"event_type": "screen_view", "data": {"screen_name": "s" * 300, "z": None}},
            ],
        }
    )
    return batches


@pytest.mark.parametrize("historical", [False, True])
def test_fast_path_matches_pydantic_on_valid_and_mutated_batches(
    historical: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    samples = _samples()
    bodies = [[b] for b in samples] + [[_mutate(rng.choice(samples), rng)] for _ in range(1500)]
    fast = [_outcome(b, historical) for b in bodies]
    monkeypatch.setattr(normalize, "_fast_batch", _slow)
    slow = [_outcome(b, historical) for b in bodies]
    for body, f, s in zip(bodies, fast, slow, strict=True):
        assert f == s, body


def test_fast_path_takes_plain_batches() -> None:
    batch = next(iter(single_user_requests(seed=4, requests=1, events_per_batch=20)))[0]
    result = normalize._fast_batch(batch, 0, "batch", False, NOW, normalize.LimitReport())
    assert len(result.events) == 20
