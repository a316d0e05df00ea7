"""Event criteria evaluated in NumPy over the sample's events, held as columns (`event_columns`).

"At least N matching events in a window" is the commonest event criterion. Its compiled SQL groups
the sample's events per user on every evaluation; here a criterion is a few vector comparisons and
a `bincount` over columns read once. Conditions on event attributes (`where`) run as the very same
SQL condition over the distinct attribute documents only, mapped back to events with a lookup (text
equality on a top-level attribute is decided here, document by document, where that is plainly
what the SQL decides); the test on the count runs as the very same SQL condition over the distinct
counts. Sums of `total_amount` run the same way over the amounts as integer nanounits (its type is
DECIMAL(38, 9), so they are exact while they fit in 64 bits; otherwise the compiled query).
Anything else (other sums, distinct counts, products, parent-entry windows) takes the compiled
query. The SQL text of those conditions is generated once per plan when it does not depend on `now`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
from sqlglot import exp

from milepost.audiences.event_columns import Codes, EventColumns
from milepost.audiences.masks import Mask, as_ids
from milepost.criteria import CompileContext, core
from milepost.criteria import operators as ops
from milepost.criteria.aggregates import TEXT_COLUMNS
from milepost.criteria.compile import Compiler, col
from milepost.criteria.dialect import lit
from milepost.criteria.model import Condition
from milepost.criteria.sqlvalues import NumberValue, test_value

# The name SQL reads the Arrow table of `_chosen` by (a replacement scan of its local variable).
ROWS_TABLE = "milepost_event_rows"

# Shifts of `now` (hours, a day, weeks, more than a year, all odd) a condition's SQL must not change
# with to be kept: whatever it reads of `now` (an instant, a day, week, month or year start) moves.
NOW_CHECKS = (7_919_993, -86_399_999, 3_461_234_567, -34_567_654_321)


@dataclass(frozen=True)
class EventPlan:
    """`[not] count(events matching selector, in window) <test>`, or `[not] <sequence>`."""

    test: core.EventTest | core.SequenceTest
    negate: bool
    # SQL conditions it runs, kept when they read nothing of `now` (None: they do, so made each time)
    texts: dict[tuple[object, ...], str | None] = field(default_factory=dict, compare=False, repr=False)
    # what those conditions chose, per text and what they ran over (the documents, or the largest count)
    chosen: dict[tuple[object, ...], tuple[object, Mask]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def lookup(self, key: tuple[object, ...], over: object, make: Callable[[], Mask]) -> Mask:
        """`make()`, kept while its SQL text and what it ran `over` stay the same (by identity:
        documents only grow, into a new array)."""
        found = self.chosen.get(key)
        if found is not None and found[0] is over:
            return found[1]
        lut = make()
        if len(self.chosen) >= 64:
            self.chosen.clear()
        self.chosen[key] = (over, lut)
        return lut

    def text(
        self, key: tuple[object, ...], now_ms: int, make: Callable[[int], str], fixed: bool = False
    ) -> str:
        """`make(now_ms)`, generated once when it is the same at other instants (`fixed`: known to be)."""
        if key in self.texts:
            found = self.texts[key]
            return found if found is not None else make(now_ms)
        sql = make(now_ms)
        same = fixed or all(make(now_ms + d) == sql for d in NOW_CHECKS)
        self.texts[key] = sql if same else None
        return sql


def _attributes_only(sel: core.Selector) -> bool:
    compiler = Compiler(CompileContext(now_ms=0, lookback_ms=0))
    for cond in sel.where:
        a = cond.attribute
        if a is None or a.startswith("product.") or a == "total_amount" or a in TEXT_COLUMNS:
            return False  # reads more than the attribute document
        if not _reads_attributes_only(compiler.where("d", cond)):
            return False
    return True


def event_plan(node: core.Node) -> EventPlan | None:
    negate = False
    if isinstance(node, core.Not):
        node, negate = node.item, True
    if isinstance(node, core.EventTest):
        if (node.fn, node.attribute) not in (("count", None), ("sum", "total_amount")):
            return None
        selectors = [node.selector]
    elif isinstance(node, core.SequenceTest):
        selectors = [node.first, node.then]
    else:
        return None
    if node.window.kind not in ("rolling", "lookback", "absolute"):
        return None
    if not all(_attributes_only(s) for s in selectors):
        return None
    return EventPlan(node, negate)


def _reads_attributes_only(e: exp.Expr) -> bool:
    """Every column of row `d` it reads is `attrs` (unqualified names are list-element variables)."""
    return all(c.name == "attrs" and c.table == "d" for c in e.find_all(exp.Column) if c.table)


def _chosen(con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str) -> Codes:
    """`code`s `sql` selects from `table`, which it reads as `ROWS_TABLE` (registering a table
    costs more than the query itself)."""
    milepost_event_rows = table  # noqa: F841 (read by DuckDB's replacement scan)
    return as_ids(con.execute(sql).fetchnumpy()["code"])


WHERE_FROM = f"SELECT d.code FROM (SELECT code, CAST(doc AS JSON) AS attrs FROM {ROWS_TABLE}) AS d WHERE "


def _where_sql(ctx: CompileContext, cond: Condition, now_ms: int) -> str:
    e = Compiler(replace(ctx, now_ms=now_ms)).where("d", cond)
    if not _reads_attributes_only(e):
        raise ValueError(f"an event condition reads more than attributes: {cond}")
    return WHERE_FROM + e.sql(dialect=ctx.dialect.name)


PLAIN_KEY = re.compile(r"[A-Za-z0-9_]+")  # a top-level key its JSON pointer names as it is


def _text_equality(cond: Condition, sql: str) -> tuple[str, frozenset[str]] | None:
    """(key, lowered texts) when `sql` is exactly "the lowered text at top-level `key` equals one
    of the texts" (`equals` / `in` on texts, in DuckDB's SQL); None: anything else."""
    values = [cond.value] if cond.op == "equals" else list(cond.values or ()) if cond.op == "in" else []
    key = cond.attribute or ""
    if not values or not all(isinstance(v, str) for v in values) or not PLAIN_KEY.fullmatch(key):
        return None
    texts = [str(v).lower() for v in values]
    terms = " OR ".join(
        f"LOWER(JSON_EXTRACT_STRING(d.attrs, '/{key}')) = '{t.replace(chr(39), chr(39) * 2)}'" for t in texts
    )
    return (key, frozenset(texts)) if sql == f"{WHERE_FROM}COALESCE(({terms}), FALSE)" else None


def _text_equal_docs(docs: pa.Array, key: str, texts: frozenset[str]) -> tuple[Mask, Codes]:
    """Documents whose top-level `key` holds one of `texts` once lowered, as the SQL decides it, and
    the documents left to the SQL: where DuckDB might read the document otherwise than here (escapes,
    the key more than once: DuckDB takes the first), or lowers other than ASCII text."""
    passing = np.zeros(len(docs), dtype=np.bool_)
    left: list[int] = []
    needle = f'"{key}"'
    for i, doc in enumerate(docs.to_pylist()):
        if doc is None:
            continue  # NULL attributes: NULL, and COALESCE makes it false
        if "\\" in doc or doc.count(needle) > 1:
            left.append(i)
            continue
        try:
            found = orjson.loads(doc)
        except orjson.JSONDecodeError:
            left.append(i)
            continue
        if not isinstance(found, dict):
            left.append(i)
            continue
        value = found.get(key)
        if value is None:
            continue  # no such key, or JSON null: NULL
        if isinstance(value, str) and value.isascii():
            passing[i] = value.lower() in texts
        else:
            left.append(i)  # another type's text, or lowering beyond ASCII: the SQL's
    return passing, np.array(left, dtype=np.int64)


def _where(
    con: duckdb.DuckDBPyConnection,
    cols: EventColumns,
    ctx: CompileContext,
    sel: core.Selector,
    plan: EventPlan,
) -> Mask:
    """Events whose attribute document passes every `where` condition."""
    passing = np.ones(len(cols.docs), dtype=np.bool_)
    for i, cond in enumerate(sel.where):

        def make(now_ms: int, cond: Condition = cond) -> str:
            return _where_sql(ctx, cond, now_ms)

        # only relative date operators read `now` (`sqlvalues.test_value`)
        sql = plan.text(("where", id(sel), i), ctx.now_ms, make, cond.op not in ops.RELATIVE)

        def run(sql: str = sql, cond: Condition = cond) -> Mask:
            equality = _text_equality(cond, sql)
            if equality is None:
                lut, left = np.zeros(len(cols.docs), dtype=np.bool_), np.arange(len(cols.docs))
            else:
                lut, left = _text_equal_docs(cols.docs, *equality)
            if len(left):
                table = pa.table({"code": pa.array(left, pa.int64()), "doc": cols.docs.take(left)})
                lut[_chosen(con, table, sql)] = True
            return lut

        passing &= plan.lookup(("where", sql), cols.docs, run)
    return passing[cols.doc_codes]


def _scope(cols: EventColumns, ctx: CompileContext) -> Mask:
    """Events on the context's inputs (`input_id IN (...)`)."""
    if ctx.input_ids is None:
        return np.ones(len(cols.ts), dtype=np.bool_)
    key = tuple(int(i) for i in ctx.input_ids)
    found = cols.scopes.get(key)
    if found is None:
        if len(cols.scopes) >= 64:
            cols.scopes.clear()
        scope = np.zeros(len(cols.ts), dtype=np.bool_)
        for i in key:
            scope |= cols.input_id == i
        found = cols.scopes[key] = cols.input_known & scope
        found.flags.writeable = False  # shared by every criterion on these inputs
    return found


def _upto(cols: EventColumns, now_ms: int) -> Mask:
    """Events with a known time at or before `now_ms`."""
    found = cols.upto.get(now_ms)
    if found is None:
        if len(cols.upto) >= 8:
            cols.upto.clear()
        found = cols.upto[now_ms] = cols.ts_known & (cols.ts <= now_ms)
        found.flags.writeable = False  # shared by every criterion at this instant
    return found


def _in_range(cols: EventColumns, r: core.TimeRange, ctx: CompileContext) -> Mask:
    """Events in the time range, as `Compiler.in_range` writes it."""
    ts, now = cols.ts, ctx.now_ms
    keep = _upto(cols, now)
    if r.kind == "lookback":
        keep = keep & (ts > now - ctx.lookback_ms)
    elif r.kind == "rolling":
        keep = keep & (ts > now - r.older_ms)
        if r.newer_ms > 0:  # else `ts <= now` implies it
            keep &= ts <= now - r.newer_ms
    elif r.kind == "absolute":
        if r.start_ms is not None:
            keep = keep & (ts >= r.start_ms)
        if r.end_ms is not None:
            keep = keep & (ts < r.end_ms)
    else:
        raise ValueError(f"not a time range of the sample's events: {r.kind}")
    return keep


def _selects(
    con: duckdb.DuckDBPyConnection,
    cols: EventColumns,
    sel: core.Selector,
    ctx: CompileContext,
    plan: EventPlan,
) -> Mask:
    """Events the selector matches, as `Compiler.selects` writes it."""
    strings = (
        ("event_type", sel.event_type),
        ("name_lc", sel.name_lc),
        ("custom_event_type_lc", sel.custom_event_type_lc),
        ("action", sel.action_lc),
    )
    key = (sel.flag, *(value for _, value in strings))
    keep = cols.chosen.get(key)
    if keep is None:
        keep = np.ones(len(cols.ts), dtype=np.bool_)
        if sel.flag is not None:
            keep &= cols.flags[sel.flag]
        for column, value in strings:
            if value is not None:
                keep &= cols.strings[column].equal(value)
        if len(cols.chosen) >= 64:
            cols.chosen.clear()
        cols.chosen[key] = keep
        keep.flags.writeable = False  # shared by every criterion with these selectors
    return keep & _where(con, cols, ctx, sel, plan) if sel.where else keep


def evaluate(
    con: duckdb.DuckDBPyConnection, cols: EventColumns, size: int, plan: EventPlan, ctx: CompileContext
) -> Mask:
    """The users meeting the criterion at `ctx.now_ms`, as the compiled query would find them
    (OverflowError: not exactly in NumPy, for the compiled query to answer)."""
    t = plan.test
    if isinstance(t, core.SequenceTest):
        members = _sequence(con, cols, size, t, ctx, plan)
    elif t.fn == "sum":
        members = _sum(con, cols, size, t, ctx, plan)
    else:
        members = _count(con, cols, size, t, ctx, plan)
    return ~members if plan.negate else members


def _sequence(
    con: duckdb.DuckDBPyConnection,
    cols: EventColumns,
    size: int,
    t: core.SequenceTest,
    ctx: CompileContext,
    plan: EventPlan,
) -> Mask:
    """Users with a `first` event in the window followed (or, not completed, not followed) by a `then`
    event within `within`: for each first event, the user's next `then` event after it."""
    now, scope = ctx.now_ms, _scope(cols, ctx)
    first = np.flatnonzero(
        cols.alive(scope & _in_range(cols, t.window, ctx) & _selects(con, cols, t.first, ctx, plan))
    )
    then = cols.alive(scope & _upto(cols, now) & _selects(con, cols, t.then, ctx, plan))
    if cols.sequence_keys is None:
        raise OverflowError("event times too spread out for one key")  # never for real data
    keys, base, span = cols.sequence_keys
    f_rows, f_ts = cols.rows[first].astype(np.int64), cols.ts[first]
    then_keys = keys[then] if cols.keys_sorted else np.sort(keys[then])
    i = np.searchsorted(then_keys, keys[first], side="right")
    limit = f_rows * span + np.minimum(f_ts + t.within_ms - base, span - 1)
    padded = np.append(then_keys, np.iinfo(np.int64).max)
    follows = padded[i] <= limit  # the user's next `then` event is within `within`
    hit = follows if t.completed else ~follows & (now >= f_ts + t.within_ms)
    members = np.zeros(size, dtype=np.bool_)
    members[f_rows[hit]] = True
    return members


def _test_text(plan: EventPlan, ctx: CompileContext, t: core.EventTest) -> str:
    """The test's SQL, generated once unless its operator compares with `now`."""
    fixed = t.test.op not in ops.RELATIVE
    return plan.text(("test",), ctx.now_ms, lambda at: _test_sql(ctx, t, at), fixed)


def _test_sql(ctx: CompileContext, t: core.EventTest, now_ms: int) -> str:
    """The test on a user's `COALESCE(v, 0)`, as `Compiler.event_test` writes it."""
    total = exp.Coalesce(this=col("v", "d"), expressions=[lit(0)])
    return test_value(NumberValue(ctx.dialect, total), t.test, now_ms).sql(dialect=ctx.dialect.name)


def _kept(
    con: duckdb.DuckDBPyConnection,
    cols: EventColumns,
    t: core.EventTest,
    ctx: CompileContext,
    plan: EventPlan,
) -> npt.NDArray[np.bool_]:
    """The events a test counts or sums: in scope, in its window, chosen by its selector."""
    return cols.alive(
        _scope(cols, ctx) & _in_range(cols, t.window, ctx) & _selects(con, cols, t.selector, ctx, plan)
    )


def _count(
    con: duckdb.DuckDBPyConnection,
    cols: EventColumns,
    size: int,
    t: core.EventTest,
    ctx: CompileContext,
    plan: EventPlan,
) -> Mask:
    keep = _kept(con, cols, t, ctx, plan)
    counts = np.bincount(cols.rows[keep], minlength=size)
    cond = _test_text(plan, ctx, t)
    # a user without a matching event has no row in the grouped counts: NULL, as after the LEFT JOIN
    top = int(counts.max(initial=0))
    if top <= max(size, 1024):  # every count up to the largest: the code is the count itself

        def run() -> Mask:
            values = (
                f"(SELECT code, CASE WHEN code > 0 THEN code END AS v FROM range(0, {top + 1}) AS t(code))"
            )
            rows = con.execute(f"SELECT d.code FROM {values} AS d WHERE {cond}").fetchall()
            lut = np.zeros(top + 1, dtype=np.bool_)
            lut[np.array([r[0] for r in rows], dtype=np.int64)] = True
            return lut

        decided = _numeric_counts(t.test, top)
        members = (decided if decided is not None else plan.lookup(("count", cond, top), None, run))[counts]
    else:
        distinct, codes = np.unique(counts, return_inverse=True)
        v = pa.array(distinct.astype(np.int64), pa.int64(), mask=distinct == 0)
        table = pa.table({"code": pa.array(np.arange(len(distinct)), pa.int64()), "v": v})
        lut = np.zeros(len(distinct), dtype=np.bool_)
        lut[_chosen(con, table, f"SELECT d.code FROM {ROWS_TABLE} AS d WHERE {cond}")] = True
        members = lut[np.asarray(codes, dtype=np.int64).reshape(-1)]
    return members


def _plain(x: object) -> bool:
    """A literal the SQL reads as this very float64: a number of at most 15 significant digits
    written without an exponent (its DECIMAL text converts to DOUBLE exactly as here)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not abs(x) < 2**31:
        return False
    text = repr(float(x))
    return "e" not in text and "n" not in text and len(text.lstrip("-").replace(".", "").lstrip("0")) <= 15


def _numeric(test: Condition, v: npt.NDArray[np.float64]) -> Mask | None:
    """Which values `v` (as DOUBLE, never NULL) pass a numeric comparison, decided here as the SQL
    decides it (`sqlvalues.test_value` compares the value as DOUBLE with the literal as DOUBLE);
    None: another operator or literal, left to the SQL."""
    op = test.op
    if op == "between":
        if not (_plain(test.min) and _plain(test.max)):
            return None
        assert test.min is not None and test.max is not None
        return (v >= float(test.min)) & (v <= float(test.max))
    if op in ops.NUMBER or op in ops.EQUALITY:
        if not _plain(test.value):
            return None
        x = float(test.value)  # type: ignore[arg-type]
        return {
            "greater_than": v > x,
            "greater_or_equal": v >= x,
            "less_than": v < x,
            "less_or_equal": v <= x,
            "equals": v == x,
            "not_equals": v != x,
        }[op]
    if op in ops.MEMBERSHIP:
        values = test.values or ()
        if not values or not all(_plain(x) for x in values):
            return None
        found = np.isin(v, np.array([float(x) for x in values], dtype=np.float64))
        return found if op == "in" else ~found
    return None


def _numeric_counts(test: Condition, top: int) -> Mask | None:
    """Which counts 0..`top` pass the test (None: left to the SQL)."""
    return _numeric(test, np.arange(top + 1, dtype=np.float64))


def _numeric_sums(test: Condition, nanos: npt.NDArray[np.int64]) -> Mask | None:
    """Which sums (in nanounits) pass the test, when each converts to DOUBLE exactly as DuckDB casts
    DECIMAL(38, 9): an integer below 2**53 divided by 10**9 (None: left to the SQL)."""
    if len(nanos) and int(np.abs(nanos).max()) >= 2**53:
        return None
    return _numeric(test, nanos.astype(np.float64) / 1e9)


def _decimals(nanos: npt.NDArray[np.int64]) -> pa.Array:
    """Integer nanounits as DECIMAL(38, 9) values: 128-bit little-endian two's complement."""
    words = np.empty((len(nanos), 2), dtype=np.int64)
    words[:, 0] = nanos
    words[:, 1] = nanos >> 63
    return pa.Array.from_buffers(pa.decimal128(38, 9), len(nanos), [None, pa.py_buffer(words.tobytes())])


def _sum(
    con: duckdb.DuckDBPyConnection,
    cols: EventColumns,
    size: int,
    t: core.EventTest,
    ctx: CompileContext,
    plan: EventPlan,
) -> Mask:
    """`sum(total_amount)`: a user's sum is 0 without matching events or amounts, as after COALESCE."""
    if not cols.amounts_exact:
        raise OverflowError("amounts too large for exact sums in int64")
    keep = _kept(con, cols, t, ctx, plan)
    sums = np.zeros(size, dtype=np.int64)
    np.add.at(sums, cols.rows[keep], cols.amount[keep])
    decided = _numeric_sums(t.test, sums)  # value by value: the same over users as over distinct sums
    if decided is not None:
        return decided
    # most users sum to 0: the distinct values of the others, and 0 last
    some = np.flatnonzero(sums)
    nonzero, inverse = np.unique(sums[some], return_inverse=True)
    distinct = np.append(nonzero, 0)
    codes = np.full(size, len(nonzero), dtype=np.int64)
    codes[some] = np.asarray(inverse, dtype=np.int64).reshape(-1)
    table = pa.table({"code": pa.array(np.arange(len(distinct)), pa.int64()), "v": _decimals(distinct)})
    cond = _test_text(plan, ctx, t)
    lut = np.zeros(len(distinct), dtype=np.bool_)
    lut[_chosen(con, table, f"SELECT d.code FROM {ROWS_TABLE} AS d WHERE {cond}")] = True
    return lut[codes]
