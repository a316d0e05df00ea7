"""The estimator's fast paths give exactly what the plain compiled SQL gives on the sample.

- Criteria on user attributes alone are evaluated once per distinct attribute value
  (`audiences.attribute_leaves`): for many operators and odd values (numbers as strings, nulls,
  arrays, missing attributes), the members equal those of the compiled query run on the sample.
- When ingest changes sampled users, cached masks are patched by re-evaluating their criteria on
  the changed users only: the patched estimate equals the one recomputed from scratch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from tests.estimator.audiences import WATCH, attr, last, random_criteria
from tests.estimator.population import DAY, LIFETIME, LOOKBACK, T0, load_population

from milepost.audiences import estimator
from milepost.audiences.attribute_leaves import attribute_leaf
from milepost.audiences.estimator import Estimator
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.criteria import CompileContext, compile_criteria, parse_criteria, to_sql
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

INPUTS = (1, 2)
CTX = CompileContext(now_ms=T0, lookback_ms=LOOKBACK, input_ids=INPUTS, parent_audience_id=-1)
ODD = [  # attribute documents that stress the operators' type rules
    '{"score": "450", "tier": "GOLD", "country": null}',
    '{"score": "4.5e2", "age": "thirty", "vip": "true"}',
    '{"score": [1, 2], "tier": ["gold"], "newsletter": null}',
    '{"score": null, "ltv": -3.5, "signup": "2026-05-20"}',
    '{"tier": "silver ", "country": "us", "signup": "2025-01-01T00:00:00Z"}',
    "{}",
]
ATTRIBUTE_CRITERIA: list[dict[str, Any]] = [
    attr("score", "greater_than", 300),
    attr("score", "less_or_equal", 450),
    {"type": "user_attribute", "attribute": "score", "op": "between", "min": 100, "max": 460},
    attr("tier", "equals", "gold"),
    attr("tier", "not_equals", "gold"),
    {"type": "user_attribute", "attribute": "country", "op": "in", "values": ["US", "FR"]},
    {"type": "user_attribute", "attribute": "country", "op": "not_in", "values": ["US"]},
    {"type": "user_attribute", "attribute": "tier", "op": "exists"},
    {"type": "user_attribute", "attribute": "country", "op": "not_exists"},
    attr("tier", "starts_with", "s"),
    attr("tier", "contains", "ol"),
    attr("vip", "equals", True),
    attr("newsletter", "equals", False),
    attr("ltv", "greater_than", 200),
    attr("signup", "after", "2026-01-01"),
    {"not": attr("age", "greater_or_equal", 40)},
    {"all": [attr("score", "greater_than", 500), attr("tier", "equals", "silver")]},
    {"any": [attr("age", "less_than", 25), {"not": attr("country", "equals", "US")}]},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBStore]:
    store = DuckDBStore(tmp_path_factory.mktemp("fast_paths") / "store")
    con = store.connect()
    load_population(con, 6_000, seed=12)
    for k, doc in enumerate(ODD):  # a few users each with an odd document
        con.execute(
            "UPDATE main.users SET attributes = ?::JSON WHERE mpid IN "
            f"(SELECT mpid FROM main.users ORDER BY mpid LIMIT 40 OFFSET {k * 40})",
            [doc],
        ).fetchall()
    con.close()
    yield store
    store.close()


def _sampled(est: Estimator, sql: str) -> set[int]:
    return {int(r[0]) for r in est.con.execute(sql).fetchall()}


@pytest.mark.parametrize("criteria", ATTRIBUTE_CRITERIA, ids=lambda c: str(c)[:60])
def test_attribute_criteria_per_distinct_value_equal_the_compiled_query(
    store: DuckDBStore, criteria: dict[str, Any]
) -> None:
    est = Estimator(store.connect())  # 6,000 users: the sample is everyone
    try:
        est.refresh()
        est._current()
        tree = compile_criteria(parse_criteria(criteria), CTX)
        sql = to_sql(tree)
        assert attribute_leaf(tree, sql) is not None, sql  # the fast path is the one tested
        got = {int(m) for m in est._index.members(est.criterion(parse_criteria(criteria), CTX))}
        assert got == _sampled(est, sql)
    finally:
        est.close()
        est.con.close()


def test_criteria_reading_more_than_attributes_take_the_compiled_query() -> None:
    for criteria in (
        {"type": "event", "event": WATCH, "window": last(30)},
        {"all": [attr("score", "greater_than", 1), {"type": "event", "event": WATCH}]},
    ):
        tree = compile_criteria(parse_criteria(criteria), CTX)
        assert attribute_leaf(tree, to_sql(tree)) is None


def _journey(criteria: dict[str, Any]) -> JourneyRows:
    return JourneyRows(
        1,
        "j",
        INPUTS,
        (
            MilestoneRow(1, 1, None, 0, "a", 101, criteria, False),
            MilestoneRow(2, 1, None, 1, "rest", 102, None, True),
        ),
    )


def _ingest(store: DuckDBStore, mpids: list[int], at: int) -> None:
    rng = random.Random(at)
    batches = []
    for mpid in mpids:
        events = [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "watch",
                    "custom_event_type": "media",
                    "timestamp_unixtime_ms": T0 - rng.randrange(DAY),
                    "custom_attributes": {"genre": "drama"},
                },
            }
            for _ in range(3)
        ]
        batches.append(
            {
                "mpid": mpid,
                "environment": "production",
                "user_attributes": {"score": rng.randrange(1000), "tier": "gold"},
                "events": events,
            }
        )
    normalized, _ = normalize_request(batches, bulk=True, historical=False, received_at=T0 - 1_000)
    windows = DedupeWindows(request_ms=30 * DAY, message_ms=7 * DAY)
    store.apply(build_plan([IngestRequest(1, T0 - 1_000, normalized)], store, windows, random.Random(at)))


def test_patched_masks_equal_masks_recomputed_from_scratch(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(estimator, "CACHE_TTL_MS", 3_600_000)  # no entry expires during the test
    monkeypatch.setattr(estimator, "REFRESH_WAIT_MS", 60_000)  # each estimate waits for the worker
    store = DuckDBStore(tmp_path_factory.mktemp("patching") / "store")
    load_population(store.connect(), 8_000, seed=13)
    est = Estimator(store.connect(), target=2_000)  # a real subset
    r = random.Random(5)
    criteria = [random_criteria(r) for _ in range(6)] + [
        {"all": [attr("tier", "equals", "gold"), {"type": "event", "event": WATCH, "window": last(2)}]}
    ]
    try:
        before = [est.journey(_journey(c), {}, {}, T0, LOOKBACK, LIFETIME) for c in criteria]
        assert not est.sample.exact
        sampled = sorted(int(m) for m in est._index.mpids)
        for round_ in range(3):
            picked = r.sample(sampled, 60) + [r.randrange(-(2**62), 2**62) for _ in range(20)]
            _ingest(store, picked, round_)
            version, entries = est.sample.version, dict(est._cache)
            patched = [est.journey(_journey(c), {}, {}, T0, LOOKBACK, LIFETIME) for c in criteria]
            assert est.sample.version > version
            assert all(est._cache[k] is e for k, e in entries.items())  # patched in place, not recomputed
            est._cache.clear()
            fresh = [est.journey(_journey(c), {}, {}, T0, LOOKBACK, LIFETIME) for c in criteria]
            for p, f in zip(patched, fresh, strict=True):
                for a in (101, 102):
                    assert p[a].size == f[a].size and p[a].criteria == f[a].criteria
                    assert (p[a].members == f[a].members).all()
        last_one = fresh[-1][101].size["sample_hits"]
        assert last_one > before[-1][101].size["sample_hits"]  # the ingested changes did show
    finally:
        est.close()
        est.con.close()
        store.close()
