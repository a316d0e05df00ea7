"""The benchmark request mixes: shapes, shares and determinism."""

from __future__ import annotations

import inspect

import orjson
import pytest

from milepost.synthetic import batch_problems, realistic_bulk_requests, single_user_requests
from milepost.synthetic.benchmark_mixes import DEFAULT_BENCH_END_MS
from milepost.synthetic.ids import MpidSpace

pytestmark = pytest.mark.unit


def test_realistic_bulk_shares_and_validity() -> None:
    seed, known = 3, 2000
    gen = realistic_bulk_requests(seed=seed, requests=60, known_users=known)
    assert inspect.isgenerator(gen)
    requests = list(gen)
    batches = [b for req in requests for b in req]
    assert all(len(req) == 100 for req in requests)
    assert all(not batch_problems(b, end_ms=DEFAULT_BENCH_END_MS) for b in batches)
    assert all(1 <= len(b["events"]) <= 10 for b in batches)
    space = MpidSpace(seed)
    known_mpids = {space.mpid(i) for i in range(known)}
    new = [b["mpid"] for b in batches if b["mpid"] not in known_mpids]
    n = len(batches)
    assert 0.04 < len(new) / n < 0.06
    assert len(set(new)) == len(new), "a new user is new only once"
    assert len({b["mpid"] for b in batches} & known_mpids) > 0.9 * known
    profile = sum("user_attributes" in b or "user_identities" in b for b in batches) / n
    assert 0.27 < profile < 0.33
    events = [e for b in batches for e in b["events"]]
    assert sum("custom_attributes" in e["data"] for e in events) / len(events) > 0.4
    assert len({e["data"]["source_message_id"] for e in events}) == len(events)
    assert len({b["source_request_id"] for b in batches}) == n


def test_realistic_bulk_other_shares_and_determinism() -> None:
    a = list(
        realistic_bulk_requests(
            seed=9, requests=20, batches_per_request=50, new_user_share=0.2, profile_share=0.1
        )
    )
    b = list(
        realistic_bulk_requests(
            seed=9, requests=20, batches_per_request=50, new_user_share=0.2, profile_share=0.1
        )
    )
    c = list(
        realistic_bulk_requests(
            seed=10, requests=20, batches_per_request=50, new_user_share=0.2, profile_share=0.1
        )
    )
    assert orjson.dumps(a) == orjson.dumps(b) != orjson.dumps(c)
    batches = [x for req in a for x in req]
    assert all(len(req) == 50 for req in a)
    profile = sum("user_attributes" in x or "user_identities" in x for x in batches) / len(batches)
    assert 0.07 < profile < 0.13


def test_single_user_requests() -> None:
    requests = list(single_user_requests(seed=4, requests=30, events_per_batch=100))
    assert len(requests) == 30
    for req in requests:
        assert len(req) == 1
        batch = req[0]
        assert len(batch["events"]) == 100
        assert len({e["data"]["source_message_id"] for e in batch["events"]}) == 100
        assert batch_problems(batch, end_ms=DEFAULT_BENCH_END_MS) == []
    assert len(next(iter(single_user_requests(seed=4, requests=1, events_per_batch=7)))[0]["events"]) == 7
    assert orjson.dumps(requests) == orjson.dumps(list(single_user_requests(seed=4, requests=30)))
