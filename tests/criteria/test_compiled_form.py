"""The form of the compiled SQL: constants folded, repeats dropped, no join a query does not need."""

from __future__ import annotations

from typing import Any

import duckdb
from sqlglot import exp

from milepost.criteria import CompileContext, compile_many, parse_criteria, to_sql
from milepost.criteria.dialect import DUCKDB
from milepost.criteria.sqlvalues import FALSE, TRUE, and_, never_null, not_, or_, sure

DAY = 86_400_000
NOW = 1_700_000_000_000


def ctx(**over: Any) -> CompileContext:
    return CompileContext(now_ms=NOW, lookback_ms=90 * DAY, **over)


def watch(days: int, n: int = 1) -> dict[str, Any]:
    return {
        "type": "event",
        "event": {"event_type": "custom_event", "name": "watch"},
        "window": {"last": {"amount": days, "unit": "days"}},
        "having": {"fn": "count", "op": "greater_or_equal", "value": n},
    }


PLAN_PAID = {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "paid"}


def tables(q: exp.Expr) -> set[str]:
    return {t.name for t in q.find_all(exp.Table)}


def test_constants_fold() -> None:
    x = exp.column("a").eq(1)
    assert and_(TRUE, x, TRUE) == x
    assert and_(x, FALSE) == FALSE
    assert or_(FALSE, x) == x
    assert or_(x, TRUE) == TRUE
    assert and_() == TRUE and or_() == FALSE
    assert not_(FALSE) == TRUE and not_(TRUE) == FALSE


def test_repeats_dropped() -> None:
    x, y = exp.column("a").eq(1), exp.column("b").eq(1)
    assert and_(x, y, x.copy()).sql() == "a = 1 AND b = 1"
    assert or_(x, x.copy()) == x


def test_sure_only_wraps_what_can_be_null() -> None:
    col = exp.column("a")
    assert not never_null(col.eq(1))
    assert isinstance(sure(col.eq(1)), exp.Coalesce)
    present = exp.Not(this=exp.Is(this=col, expression=exp.Null()))
    assert never_null(present) and sure(present) is present
    total = exp.Coalesce(this=col.copy(), expressions=[exp.convert(0)])
    assert never_null(exp.GTE(this=exp.cast(total, "DOUBLE"), expression=exp.convert(1.0)))
    assert not never_null(exp.TryCast(this=exp.convert("1"), to=exp.DataType.build("DOUBLE")))


def test_leaves_in_one_scan_share_its_bounds() -> None:
    sql = to_sql(compile_many([parse_criteria(watch(30, 3)), parse_criteria(watch(30, 1))], ctx()))
    # The scan's bounds once; the two leaves with the same window need no range of their own.
    assert sql.count("e.ts >") == 1, sql
    assert sql.count("e.ts <=") == 1, sql


def test_a_narrower_window_keeps_its_own_older_bound() -> None:
    sql = to_sql(compile_many([parse_criteria(watch(30)), parse_criteria(watch(7))], ctx()))
    assert f"e.ts > {NOW - 30 * DAY}" in sql and f"e.ts > {NOW - 7 * DAY}" in sql, sql


def test_no_join_to_users_when_no_user_column_is_read() -> None:
    q = compile_many([parse_criteria(watch(7))], ctx(candidates="eval_parent"))
    assert "users" not in tables(q)
    q = compile_many([parse_criteria(watch(7)), parse_criteria(PLAN_PAID)], ctx(candidates="eval_parent"))
    assert "users" in tables(q)
    # A list of mpids is not known to hold only users: `users` is read.
    assert "users" in tables(compile_many([parse_criteria(watch(7))], ctx(candidates=[1, 2])))


def test_attribute_text_read_in_one_call() -> None:
    sql = to_sql(compile_many([parse_criteria(PLAN_PAID)], ctx()))
    assert "JSON_EXTRACT_STRING(u.attributes, '/plan')" in sql, sql
    assert "JSON_EXTRACT(" not in sql, sql


def test_duckdb_list_has_any_agrees_with_the_builtin() -> None:
    # The DuckDB form tests each value with `list_contains`; it answers as `list_has_any` does.
    lists = [[], [1], [2], [1, 2], [3, 4, 1], None]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, inputs INTEGER[])").fetchall()
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(lists)))
    for values in [(1,), (2,), (1, 2), (5,), (4, 5, 6)]:
        ours = to_sql(DUCKDB.list_has_any(exp.column("inputs"), values))
        assert "list_has_any" not in ours.lower()
        rows = con.execute(
            f"SELECT i, {ours}, list_has_any(inputs, {list(values)}::INTEGER[]) FROM t ORDER BY i"
        ).fetchall()
        assert [r[1] for r in rows] == [r[2] for r in rows], values
