"""Event counts, sums of amounts and sequences evaluated in NumPy (`audiences.event_leaves`) give exactly what the compiled query
gives on the sample: random selectors, `where` conditions on attributes (odd documents included),
windows, inputs, count tests and negation, at random instants. And the compiled queries the
estimator runs read the `sample` schema's tables, never the full store's."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from tests.criteria.criteria_strategies import operands, selectors, windows
from tests.estimator.audiences import random_criteria
from tests.estimator.population import DAY, LOOKBACK, T0, load_population

from milepost.audiences.estimator import Estimator
from milepost.audiences.event_columns import load
from milepost.audiences.event_leaves import NOW_CHECKS, evaluate, event_plan
from milepost.criteria import CompileContext, compile_criteria, parse_criteria, to_sql
from milepost.criteria import operators as ops
from milepost.criteria.core import lower
from milepost.criteria.dialect import DUCKDB
from milepost.criteria.model import Condition, Duration
from milepost.criteria.sqlvalues import NumberValue
from milepost.criteria.sqlvalues import test_value as sql_test
from milepost.engines.duckdb import DuckDBStore

AMOUNTS = [None, "-0.000000001", "123456.123456789", "50", "49.999999999", "-50", "0", "25.5", "8999999.5"]
ODD_ATTRS = ['{"genre": 5}', '{"genre": ["drama", "news"]}', '{"genre": "Drama"}', '{"minutes": "12"}',
             '{"genre": null}', "null", '{"genre": "2026-05-20"}']  # fmt: skip


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estimator]:
    store = DuckDBStore(tmp_path_factory.mktemp("event_leaves") / "store")
    con = store.connect()
    load_population(con, 4_000, seed=17)
    for k, doc in enumerate(ODD_ATTRS):
        con.execute("UPDATE main.events SET attrs = ?::JSON WHERE event_id % 37 = ?", [doc, k]).fetchall()
    # a third of the events at T0's time of day, so whole-day windows end exactly on some of them
    con.execute(f"UPDATE main.events SET ts = ts - ts % {DAY} + {T0 % DAY} WHERE event_id % 3 = 0").fetchall()
    con.execute("UPDATE main.events SET custom_event_type = 'MEDIA' WHERE event_id % 43 = 0").fetchall()
    con.execute("UPDATE main.events SET input_id = 3 WHERE event_id % 47 = 0").fetchall()
    con.execute("UPDATE main.events SET name_lc = NULL WHERE event_id % 53 = 0").fetchall()
    con.execute("UPDATE main.events SET is_install = true WHERE event_id % 59 = 0").fetchall()
    for k, amount in enumerate(AMOUNTS):  # commerce columns on any event type too
        con.execute("UPDATE main.events SET total_amount = ? WHERE event_id % 31 = ?", [amount, k]).fetchall()
    con.close()
    est = Estimator(store.connect(), target=1_000)  # a real subset
    est.refresh()
    est._current()
    assert not est.sample.exact
    yield est
    est.close()
    est.con.close()
    store.close()


@st.composite
def conditions(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [
        {"attribute": draw(st.sampled_from(["genre", "minutes", "k"])), **draw(operands("any"))}
        for _ in range(draw(st.integers(0, 2)))
    ]


@st.composite
def event_plans(draw: st.DrawFn) -> dict[str, Any]:
    leaf: dict[str, Any]
    if draw(st.booleans()):
        leaf = {"type": "event", "event": draw(selectors()), "where": draw(conditions())}
        test = draw(
            operands("number").filter(lambda o: o["op"] not in ("exists", "not_exists", "in", "not_in"))
        )
        having = draw(st.sampled_from([None, "count", "sum"]))
        if having == "count":
            leaf["having"] = {"fn": "count", **test}
        elif having == "sum":
            leaf["having"] = {"fn": "sum", "attribute": "total_amount", **test}
    else:
        first, then = draw(selectors()), draw(selectors())
        first["where"], then["where"] = draw(conditions()), draw(conditions())
        within = draw(st.sampled_from([(1, "hours"), (1, "days"), (3, "days"), (2, "weeks")]))
        leaf = {"type": "sequence", "first": first, "then": then, "completed": draw(st.booleans())}
        leaf["within"] = {"amount": within[0], "unit": within[1]}
    window = draw(windows.filter(lambda w: w is None or "since_parent_entry" not in w))  # needs memberships
    if window is not None:
        leaf["window"] = window
    return {"not": leaf} if draw(st.booleans()) else leaf


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    event_plans(),
    st.sampled_from([None, (1,), (1, 2), ()]),
    st.one_of(st.integers(-30 * DAY, 10 * DAY), st.integers(-30, 10).map(lambda d: d * DAY)),
    st.sampled_from([0, 1, -DAY, 40 * DAY + 1, -200 * DAY]),
)
def test_event_plans_in_numpy_equal_the_compiled_query(
    est: Estimator, criteria: dict[str, Any], inputs: tuple[int, ...] | None, shift: int, later: int
) -> None:
    crit = parse_criteria(criteria)
    ctx = CompileContext(now_ms=T0 + shift, lookback_ms=LOOKBACK, input_ids=inputs, parent_audience_id=-1)
    expected = est._index.mask(est._fetch(to_sql(compile_criteria(crit, ctx))))
    plan = event_plan(lower(crit, {}))
    if plan is not None:
        cols = load(est.con, est._index)
        got = evaluate(est.con, cols, len(est._index), plan, ctx)
        assert (got == expected).all()
        # the same plan at another instant: SQL it kept from the first must still be right
        again = replace(ctx, now_ms=ctx.now_ms + later)
        expected_again = est._index.mask(est._fetch(to_sql(compile_criteria(crit, again))))
        assert (evaluate(est.con, cols, len(est._index), plan, again) == expected_again).all()
    assert (est.criterion(crit, ctx) == expected).all()  # whichever path the estimator takes


def test_the_common_event_criteria_take_the_numpy_path() -> None:
    watch = {"event_type": "custom_event", "name": "watch"}
    for c in (
        {"type": "event", "event": watch, "window": {"last": {"amount": 7, "unit": "days"}}},
        {
            "type": "event",
            "event": watch,
            "where": [{"attribute": "genre", "op": "equals", "value": "drama"}],
        },
        {
            "not": {
                "type": "event",
                "event": watch,
                "having": {"fn": "count", "op": "greater_than", "value": 2},
            }
        },
        {
            "type": "event",
            "event": {"event_type": "commerce_event", "action": "purchase"},
            "having": {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 50},
        },
    ):
        assert event_plan(lower(parse_criteria(c), {})) is not None, c
    for c in (
        {"type": "event", "event": watch, "window": {"since_parent_entry": True}},
        {
            "type": "event",
            "event": watch,
            "having": {"fn": "sum", "attribute": "minutes", "op": "greater_than", "value": 2},
        },
        {
            "type": "event",
            "event": watch,
            "where": [{"attribute": "product.cat", "op": "equals", "value": "x"}],
        },
    ):
        assert event_plan(lower(parse_criteria(c), {})) is None, c


def test_leaf_queries_read_only_the_sample_tables(est: Estimator) -> None:
    r = random.Random(4)
    ctx = CompileContext(now_ms=T0, lookback_ms=LOOKBACK, input_ids=(1, 2), parent_audience_id=-1)
    for _ in range(20):
        sql = to_sql(compile_criteria(parse_criteria(random_criteria(r)), ctx))
        plan = "\n".join(str(row[1]) for row in est.con.execute("EXPLAIN " + sql).fetchall())
        tables = set(re.findall(r"Table: (\S+)", plan))
        assert tables and all('"sample".' in t for t in tables), (tables, sql)


# DECIMAL(38, 9) holds both; int64 nanounits hold neither the first nor a sum of two of the second
@pytest.mark.parametrize("big", ["12345678901234567890.5", "5000000000"])
def test_sums_beyond_int64_nanounits_take_the_compiled_query(tmp_path: Any, big: str) -> None:
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    load_population(con, 300, seed=5)
    con.execute("UPDATE main.events SET total_amount = ?::DECIMAL(38, 9) WHERE event_id % 5 = 0", [big])
    con.close()
    est = Estimator(store.connect())
    try:
        est.refresh()
        est._current()
        crit = parse_criteria(
            {"type": "event", "event": {"event_type": "commerce_event"},
             "having": {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 50}}
        )  # fmt: skip
        ctx = CompileContext(now_ms=T0, lookback_ms=LOOKBACK, input_ids=None, parent_audience_id=-1)
        expected = est._index.mask(est._fetch(to_sql(compile_criteria(crit, ctx))))
        assert expected.any()
        plan = event_plan(lower(crit, {}))
        assert plan is not None
        with pytest.raises(OverflowError):
            evaluate(est.con, load(est.con, est._index), len(est._index), plan, ctx)
        assert (est.criterion(crit, ctx) == expected).all()
    finally:
        est.close()
        est.con.close()
        store.close()


def test_a_plan_reevaluated_later_follows_now_in_its_conditions(est: Estimator) -> None:
    crit = parse_criteria(
        {"type": "event", "event": {"event_type": "custom_event"},
         "where": [{"attribute": "genre", "op": "within_last", "value": {"amount": 30, "unit": "days"}}]}
    )  # fmt: skip
    plan = event_plan(lower(crit, {}))
    assert plan is not None
    cols = load(est.con, est._index)
    found = []
    for now in (T0, T0 + 60 * DAY, T0):
        ctx = CompileContext(now_ms=now, lookback_ms=400 * DAY, input_ids=None, parent_audience_id=-1)
        expected = est._index.mask(est._fetch(to_sql(compile_criteria(crit, ctx))))
        assert (evaluate(est.con, cols, len(est._index), plan, ctx) == expected).all(), now
        found.append(expected)
    assert found[0].any() and (found[0] != found[1]).any()  # the instant matters here


def _conditions() -> Iterator[Condition]:
    """A condition for every operator, with an operand of the shape it takes."""
    for op in sorted(ops.ALL_OPS):
        if op in ops.PRESENCE:
            yield Condition(op=op)
        elif op in ops.MEMBERSHIP:
            yield Condition(op=op, values=(3, 7))
        elif op == "between":
            yield Condition(op=op, min=2, max=9)
        elif op == "between_dates":
            yield Condition(op=op, values=("2026-05-01", "2026-05-20"))
        elif op in ops.RELATIVE:
            yield Condition(op=op, value=Duration(amount=3, unit="days"))
        elif op in ops.DATE:
            yield Condition(op=op, value="2026-05-20")
        elif op in ops.STRING or op == "partial_match":
            yield Condition(op=op, value="dr*")
        else:
            yield Condition(op=op, value=5)


@pytest.mark.parametrize("cond", list(_conditions()), ids=lambda c: c.op)
def test_only_relative_operators_make_a_count_test_read_now(cond: Condition) -> None:
    """A count or sum test's SQL is generated once unless its operator is in `ops.RELATIVE`: every
    other operator's SQL must be the same at any instant."""
    value = NumberValue(DUCKDB, exp.column("v"))
    texts = {sql_test(value, cond, T0 + d).sql(dialect="duckdb") for d in (0, *NOW_CHECKS)}
    assert (len(texts) > 1) == (cond.op in ops.RELATIVE)
