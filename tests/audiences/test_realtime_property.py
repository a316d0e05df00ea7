"""Real-time maintenance (micro-batches + timers) and full calculation agree, on random data and time steps."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.audiences.user_events import UserEventsSettings
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_780_315_200_000

NAMES = ["watch", "open_email", "sign_up"]


def event_leaf(name: str, n: int, days: int) -> dict[str, Any]:
    return {
        "type": "event",
        "event": {"event_type": "custom_event", "name": name},
        "having": {"fn": "count", "op": "greater_or_equal", "value": n},
        "window": {"last": {"amount": days, "unit": "days"}},
    }


LEAVES = st.one_of(
    st.builds(event_leaf, st.sampled_from(NAMES), st.integers(1, 3), st.integers(1, 5)),
    st.builds(
        lambda v: {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": v},
        st.sampled_from(["free", "paid"]),
    ),
    st.builds(
        lambda d: {"type": "last_seen", "op": "within_last", "value": {"amount": d, "unit": "days"}},
        st.integers(1, 4),
    ),
    st.builds(
        lambda d: {
            "type": "sequence",
            "first": {"event_type": "custom_event", "name": "sign_up"},
            "then": {"event_type": "custom_event", "name": "watch"},
            "within": {"amount": d, "unit": "days"},
            "completed": False,
        },
        st.integers(1, 3),
    ),
)
CRITERIA = st.one_of(LEAVES, st.builds(lambda a, b: {"any": [a, {"not": b}]}, LEAVES, LEAVES))


def batch_strategy() -> st.SearchStrategy[dict[str, Any]]:
    event = st.builds(
        lambda name, age: {
            "event_type": "custom_event",
            "data": {"event_name": name, "custom_event_type": "other", "age_h": age},
        },
        st.sampled_from(NAMES),
        st.integers(0, 6 * 24),
    )
    return st.builds(
        lambda mpid, plan, evs: {
            "mpid": mpid,
            "user_attributes": {"plan": plan} if plan else {},
            "events": evs,
        },
        st.integers(1, 6),
        st.sampled_from([None, "free", "paid"]),
        st.lists(event, max_size=3),
    )


STEPS = st.lists(
    st.tuples(st.integers(0, 3 * DAY), st.lists(batch_strategy(), max_size=4)), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CRITERIA, min_size=1, max_size=3), st.booleans(), STEPS, st.booleans())
def test_realtime_equals_full_calculation(
    criteria: list[dict[str, Any]], remaining: bool, steps: list[Any], absorb: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "store")
        clock = ManualClock(T0)
        # Half the examples hold the events by user, taking in the newest at every evaluation.
        held = UserEventsSettings(min_events=0, tail_rows=1, check_every=1, wait=True) if absorb else None
        engine = AudienceEngine(store.connect(), clock, EngineSettings(5 * DAY, 3 * DAY), user_events=held)
        rows = [MilestoneRow(i + 1, 1, None, i, f"m{i}", 100 + i, c, False) for i, c in enumerate(criteria)]
        if remaining:
            rows.append(MilestoneRow(99, 1, None, 99, "rest", 199, None, True))
        child = MilestoneRow(
            50, 1, 1, 0, "child", 150, {"type": "user_attribute", "attribute": "plan", "op": "exists"}, False
        )
        engine.configure([JourneyRows(1, "j", (1,), (*rows, child))], {})
        rng = random.Random(0)
        try:
            for gap, batches in steps:
                clock.advance(gap)
                now = clock.now_ms()
                engine.advance(now)
                if batches:
                    for b in batches:
                        for e in b["events"]:
                            e["data"]["timestamp_unixtime_ms"] = now - e["data"].pop("age_h", 0) * HOUR
                    normalized, _ = normalize_request(batches, bulk=True, historical=False, received_at=now)
                    plan = build_plan(
                        [IngestRequest(1, now, normalized)], store, DedupeWindows(DAY, DAY), rng
                    )
                    store.apply(plan)
                    engine.catch_up(now)
            clock.advance(DAY)
            engine.advance(clock.now_ms())
            audiences = [r.audience_id for r in rows] + [150]
            realtime = {a: engine.members(a) for a in audiences}
            check = engine.full_calculation(clock.now_ms())
            assert (check.adds, check.removes) == (0, 0), realtime
            assert {a: engine.members(a) for a in audiences} == realtime
            # One row per (audience, user): the engine keeps it so (the table has no key).
            rows_, pairs = engine.con.execute(
                "SELECT count(*), count(DISTINCT (audience_id, mpid)) FROM memberships"
            ).fetchall()[0]
            assert rows_ == pairs
            log = (
                store.reader()
                .execute(
                    "SELECT audience_id, mpid, list(action ORDER BY seq) FROM membership_changes GROUP BY ALL"
                )
                .fetchall()
            )
            for audience, mpid, actions in log:
                # Each transition is logged once: adds and removes alternate, starting with an add.
                assert all(a == ("add" if i % 2 == 0 else "remove") for i, a in enumerate(actions)), actions
                assert (actions[-1] == "add") == (mpid in realtime[audience])
        finally:
            engine.con.close()
            store.close()
