"""Estimates as time passes: cached answers are served only while they are what a fresh evaluation
at the request's instant gives (within the documented slack), and compiled SQL rendered from a
template with `now` as a parameter is exactly what the compiler writes at that instant."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.criteria.criteria_strategies import calculated_definitions
from tests.criteria.criteria_strategies import criteria as any_criteria
from tests.estimator.audiences import WATCH, attr, last, random_criteria
from tests.estimator.population import DAY, LIFETIME, LOOKBACK, T0, load_population

from milepost.audiences import estimator, leaves
from milepost.audiences.estimator import Estimator, NodeEstimate
from milepost.audiences.sql_templates import template
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.audiences.validity import Instants, durations
from milepost.criteria import (
    CompileContext,
    compile_criteria,
    parse_calculated_attribute,
    parse_criteria,
    to_sql,
)
from milepost.engines.duckdb import DuckDBStore

INPUTS = (1, 2)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@st.composite
def compiled_at(draw: st.DrawFn) -> tuple[Any, CompileContext]:
    calcs = [parse_calculated_attribute(draw(calculated_definitions(f"calc{i}"))) for i in range(2)]
    ctx = CompileContext(
        now_ms=T0,
        lookback_ms=draw(st.sampled_from([30 * DAY, 90 * DAY])),
        input_ids=draw(st.sampled_from([None, (1,), (1, 2), ()])),
        parent_audience_id=draw(st.sampled_from([None, 1, 2])),
        calculated={c.name: c for c in calcs},
    )
    return parse_criteria(draw(any_criteria)), ctx


def _sql(crit: Any, ctx: CompileContext, now: int) -> str:
    ctx = CompileContext(now, ctx.lookback_ms, ctx.input_ids, ctx.parent_audience_id, ctx.calculated)
    return to_sql(compile_criteria(crit, ctx))


@SETTINGS
@given(compiled_at(), st.integers(1, 400 * DAY), st.integers(-400 * DAY, 400 * DAY))
def test_a_template_renders_what_the_compiler_writes_at_any_instant(
    case: tuple[Any, CompileContext], step: int, later: int
) -> None:
    crit, ctx = case
    a, b = T0, T0 + step
    t = template(_sql(crit, ctx, a), a, _sql(crit, ctx, b), b)
    assert t is not None  # the compiler writes instants as `now` plus a constant
    assert t.render(T0 + later) == _sql(crit, ctx, T0 + later)


def test_a_template_refuses_texts_that_differ_otherwise() -> None:
    assert template("x > 100 AND y = 'a'", 100, "x > 200 AND y = 'b'", 200) is None
    assert template("x > 100 AND y = 7", 100, "x > 200 AND y = 8", 200) is None  # 7 -> 8 is not +100
    assert template("x > 100", 100, "x > 100", 100) is None
    t = template("x > 90 AND y = 7", 100, "x > 190 AND y = 7", 200)
    assert t is not None and t.render(1000) == "x > 990 AND y = 7"


def test_durations_are_none_when_time_is_read_outside_the_sample() -> None:
    member = {"type": "audience", "audience_id": 3, "member_for": {"amount": 2, "unit": "days"}}
    entry = {"type": "parent_entry", "op": "within_last", "value": {"amount": 2, "unit": "days"}}
    since_entry = {"type": "event", "event": WATCH, "window": {"since_parent_entry": True}}
    recent = {
        "type": "user_attribute",
        "attribute": "signup",
        "op": "within_last",
        "value": {"amount": 3, "unit": "days"},
    }
    for c in (member, entry, since_entry, recent, {"all": [attr("score", "greater_than", 1), recent]}):
        assert durations(parse_criteria(c), [], LOOKBACK, LIFETIME) is None, c
    spans = durations(
        parse_criteria({"type": "event", "event": WATCH, "window": last(7)}), [], LOOKBACK, LIFETIME
    )
    assert spans is not None and 7 * DAY in spans and 0 in spans
    assert durations(parse_criteria(attr("score", "greater_than", 1)), [], LOOKBACK, LIFETIME) == frozenset()


def test_next_change_is_the_first_held_instant_plus_a_span_after_now() -> None:
    import numpy as np

    held = Instants().add(np.array([50, 10, 30], dtype=np.int64)).add(np.array([25], dtype=np.int64))
    assert held.next_change([0], 20) == 25
    assert held.next_change([0], 50) > 10**15  # nothing after
    assert held.next_change([0, 100], 20) == 25
    assert held.next_change([100], 120) == 125  # 25 + 100 is the first after 120
    assert held.next_change([100], 125) == 130


# ---- on a sample ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estimator]:
    store = DuckDBStore(tmp_path_factory.mktemp("time") / "store")
    load_population(store.connect(), 4_000, seed=21)
    est = Estimator(store.connect(), target=1_000)
    est.refresh()
    yield est
    est.close()
    est.con.close()
    store.close()


def _journey(criteria: dict[str, Any]) -> JourneyRows:
    rows = (
        MilestoneRow(1, 1, None, 0, "a", 101, criteria, False),
        MilestoneRow(2, 1, None, 1, "rest", 102, None, True),
    )
    return JourneyRows(1, "j", INPUTS, rows)


def _estimate(est: Estimator, criteria: dict[str, Any], now: int) -> dict[int, NodeEstimate]:
    return est.journey(_journey(criteria), {}, {}, now, LOOKBACK, LIFETIME)


def _same(a: dict[int, NodeEstimate], b: dict[int, NodeEstimate]) -> None:
    for k in (101, 102):
        assert a[k].size == b[k].size and a[k].criteria == b[k].criteria
        assert (a[k].members == b[k].members).all()


@SETTINGS
@given(st.integers(0, 2**32), st.integers(-40 * DAY, 40 * DAY), st.integers(0, 6), st.integers(-1, 1))
def test_a_cached_answer_is_what_a_fresh_evaluation_at_that_instant_gives(
    est: Estimator, seed: int, start: int, pick: int, nudge: int
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(leaves, "TIME_SLACK_MS", 0)  # exact: served only before the next possible change
        est._cache.clear()
        est._leaves.clear()
        crit = random_criteria(random.Random(seed))
        now = T0 + start
        _estimate(est, crit, now)
        ends = sorted({e.until_ms for e in est._cache.values()})
        later = ends[pick % len(ends)] + nudge  # just before, at, and just after an answer's end
        if later < now:
            later = now + 1
        served = _estimate(est, crit, later)
        est._cache.clear()
        _same(served, _estimate(est, crit, later))
        est._cache.clear()
        est._leaves.clear()  # made without the slack


def test_answers_survive_time_passing(est: Estimator) -> None:
    est._cache.clear()
    crit = {
        "all": [attr("score", "greater_than", 300), {"type": "event", "event": WATCH, "window": last(30)}]
    }
    first = _estimate(est, crit, T0)
    entries = dict(est._cache)
    assert all(e.until_ms >= T0 + leaves.TIME_SLACK_MS for e in entries.values())
    again = _estimate(est, crit, T0 + leaves.TIME_SLACK_MS - 1)  # within the slack: the same answers
    assert all(est._cache[k] is e for k, e in entries.items())
    _same(first, again)
    attribute = next(e for k, e in entries.items() if k[0] == "c" and b"score" in k[1])
    _estimate(est, crit, T0 + 365 * DAY)  # a criterion on attributes alone holds whatever the time
    assert est._cache[next(k for k, e in entries.items() if e is attribute)] is attribute


def test_a_served_answer_with_slack_is_an_exact_one_from_at_most_that_long_ago(est: Estimator) -> None:
    r = random.Random(8)
    for _ in range(6):
        crit = random_criteria(r)  # windows of days: every criterion gets the slack
        est._cache.clear()
        _estimate(est, crit, T0)
        later = _estimate(est, crit, T0 + leaves.TIME_SLACK_MS - 1)
        assert {e.now_ms for e in est._cache.values()} == {T0}
        est._cache.clear()
        _same(later, _estimate(est, crit, T0))


def test_masks_about_to_stop_serving_are_renewed_at_the_latest_instant_in_the_background(
    est: Estimator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(estimator, "CACHE_TTL_MS", 3_600_000)  # nothing expires for its age here
    monkeypatch.setattr(estimator, "STALE_TTL_MS", 3_600_000)
    monkeypatch.setattr(estimator, "RENEW_AFTER_MS", 3_600_000)
    est._cache.clear()
    crit = {
        "any": [attr("score", "greater_than", 300), {"type": "event", "event": WATCH, "window": last(30)}]
    }
    _estimate(est, crit, T0)
    entries = dict(est._cache)
    end = min(e.until_ms for e in entries.values())  # the first to stop serving
    soon = end - estimator.RENEW_AHEAD_MS // 2
    ending = {k for k, e in entries.items() if est._ends_soon(e, soon)}
    assert ending and all(entries[k].now_ms == T0 for k in ending)
    _estimate(est, crit, soon)  # still served: computed at T0 (the worker may renew them from here)
    assert all(est._cache[k] is e for k, e in entries.items())
    for _ in range(len(entries)):
        with est._sync_lock:
            est._renew(est._worker_con)
    assert all(est._cache[k] is e for k, e in entries.items())  # renewed in place
    assert all(entries[k].now_ms == soon for k in ending)
    later = _estimate(est, crit, end + 1)  # past where T0's answers ended: served, renewed
    assert all(est._cache[k] is e for k, e in entries.items())
    est._cache.clear()
    _same(later, _estimate(est, crit, soon))  # the answer at the instant it was renewed at
