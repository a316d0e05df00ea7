"""A count's or a sum's numeric test decided in NumPy picks the very values the compiled SQL picks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from milepost.audiences.event_leaves import _decimals, _numeric_counts, _numeric_sums, _test_sql
from milepost.criteria import CompileContext, core
from milepost.criteria.model import Condition

TOP = 40
CONDITIONS = [
    Condition(op="greater_than", value=0),
    Condition(op="greater_than", value=2.5),
    Condition(op="greater_or_equal", value=3),
    Condition(op="less_than", value=1),
    Condition(op="less_or_equal", value=-1),
    Condition(op="equals", value=0),
    Condition(op="equals", value=7.0),
    Condition(op="not_equals", value=2),
    Condition(op="between", min=2, max=5.5),
    Condition(op="between", min=0, max=0),
    Condition(op="in", values=(0, 3, 9.5, 12)),
    Condition(op="not_in", values=(1, 4)),
    Condition(op="greater_than", value=99.99),
    Condition(op="less_or_equal", value=0.3),
    Condition(op="equals", value=0.1),
    Condition(op="between", min=0.07, max=12.345),
    Condition(op="in", values=(0.2, 5, 1234.5678)),
]


@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: f"{c.op}")
def test_numeric_counts_match_the_sql(cond: Condition) -> None:
    decided = _numeric_counts(cond, TOP)
    assert decided is not None
    ctx = CompileContext(now_ms=0, lookback_ms=0)
    test = cast(core.EventTest, SimpleNamespace(test=cond))  # the SQL of its test alone
    values = f"(SELECT code, CASE WHEN code > 0 THEN code END AS v FROM range(0, {TOP + 1}) AS t(code))"
    sql = f"SELECT d.code FROM {values} AS d WHERE {_test_sql(ctx, test, 0)} ORDER BY 1"
    chosen = [r[0] for r in duckdb.connect().execute(sql).fetchall()]
    assert [int(c) for c in decided.nonzero()[0]] == chosen


def test_other_literals_are_left_to_the_sql() -> None:
    assert _numeric_counts(Condition(op="equals", value="3"), TOP) is None
    assert _numeric_counts(Condition(op="in", values=(1, "x")), TOP) is None
    assert _numeric_counts(Condition(op="greater_than", value=2**40), TOP) is None
    assert _numeric_counts(Condition(op="exists"), TOP) is None


@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: f"{c.op}")
def test_numeric_sums_match_the_sql(cond: Condition) -> None:
    rng = np.random.default_rng(5)
    nanos = np.concatenate(
        [
            np.arange(-200, 200, dtype=np.int64) * 10**7,  # cents, 0.1 and 0.3 among them
            rng.integers(-(10**12), 10**12, 2_000),
            np.array([99_990_000_000, 99_990_000_001, 5 * 10**9, 1_234_567_800_000, 2**53 - 1]),
        ]
    ).astype(np.int64)
    decided = _numeric_sums(cond, nanos)
    assert decided is not None
    ctx = CompileContext(now_ms=0, lookback_ms=0)
    test = cast(core.EventTest, SimpleNamespace(test=cond))
    rows = pa.table({"code": pa.array(np.arange(len(nanos)), pa.int64()), "v": _decimals(nanos)})
    sql = f"SELECT d.code FROM rows AS d WHERE {_test_sql(ctx, test, 0)} ORDER BY 1"
    con = duckdb.connect()
    con.register("rows", rows)
    chosen = [r[0] for r in con.execute(sql).fetchall()]
    assert [int(c) for c in decided.nonzero()[0]] == chosen


def test_sums_beyond_exact_doubles_are_left_to_the_sql() -> None:
    cond = Condition(op="greater_than", value=1)
    assert _numeric_sums(cond, np.array([2**53], dtype=np.int64)) is None
    assert (
        _numeric_sums(Condition(op="greater_than", value=0.1234567890123456), np.zeros(1, np.int64)) is None
    )
