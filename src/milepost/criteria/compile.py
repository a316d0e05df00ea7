"""Compile criteria to one sqlglot SELECT over the store tables (docs/store-layout.md).

Event, sequence and calculated-attribute leaves become grouped CTEs joined to `users`, shared
between all criteria compiled together; profile leaves become correlated EXISTS tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlglot import exp

from milepost.criteria import core
from milepost.criteria.aggregates import calc_cte, event_value_sql
from milepost.criteria.dialect import DUCKDB, Dialect, lit
from milepost.criteria.model import CalculatedAttribute, Condition, Criteria
from milepost.criteria.sqlvalues import (
    FALSE,
    TRUE,
    Instant,
    JsonValue,
    NumberValue,
    SqlValue,
    StringValue,
    and_,
    before,
    or_,
    sure,
    test_value,
)

USERS = "u"


@dataclass(frozen=True)
class CompileContext:
    """Everything outside the criteria that the query depends on."""

    now_ms: int
    lookback_ms: int
    input_ids: tuple[int, ...] | None = None  # None: every input
    parent_audience_id: int | None = None
    calculated: Mapping[str, CalculatedAttribute] = field(default_factory=dict)
    candidates: Sequence[int] | str | None = None  # mpids, or a table with an `mpid` column
    dialect: Dialect = DUCKDB
    # The instant as an SQL expression bound per evaluation (one compiled query serves every
    # evaluation); None: `now_ms` as literals.
    now_sql: exp.Expr | None = None


def col(name: str, table: str) -> exp.Column:
    return exp.column(name, table=table)


def eq(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    return exp.EQ(this=a, expression=b)


class Compiler:
    """Builds conditions for one query, collecting the CTEs they need (deduplicated)."""

    def __init__(self, ctx: CompileContext) -> None:
        self.ctx = ctx
        self.d = ctx.dialect
        self.ctes: dict[object, str] = {}
        self.cte_bodies: list[tuple[str, exp.Select]] = []
        self.now: Instant = ctx.now_sql if ctx.now_sql is not None else ctx.now_ms

    def ago(self, ms: int = 0) -> exp.Expr:
        """`now - ms`."""
        return before(self.now, ms)

    # -- helpers -------------------------------------------------------------------------
    def candidate_filter(self, mpid: exp.Expr) -> exp.Expr:
        c = self.ctx.candidates
        if c is None:
            return TRUE
        if isinstance(c, str):
            return exp.In(this=mpid, query=exp.select("mpid").from_(exp.to_table(c)).subquery())
        if not c:
            return FALSE
        return exp.In(this=mpid, expressions=[lit(int(x)) for x in c])

    def cte(self, key: object, body: exp.Select) -> str:
        key = (key, self.ctx.parent_audience_id)
        if key not in self.ctes:
            name = f"leaf_{len(self.ctes)}"
            self.ctes[key] = name
            self.cte_bodies.append((name, body))
        return self.ctes[key]

    def scope(self, a: str) -> exp.Expr:
        ids = self.ctx.input_ids
        if ids is None:
            return TRUE
        if not ids:
            return FALSE
        return exp.In(this=col("input_id", a), expressions=[lit(int(i)) for i in ids])

    def in_range(self, a: str, r: core.TimeRange) -> exp.Expr:
        ts = col("ts", a)
        parts: list[exp.Expr] = [exp.LTE(this=ts, expression=self.ago())]
        if r.kind == "lookback":
            parts.append(exp.GT(this=ts.copy(), expression=self.ago(self.ctx.lookback_ms)))
        elif r.kind == "rolling":
            parts.append(exp.GT(this=ts.copy(), expression=self.ago(r.older_ms)))
            parts.append(exp.LTE(this=ts.copy(), expression=self.ago(r.newer_ms)))
        elif r.kind == "absolute":
            if r.start_ms is not None:
                parts.append(exp.GTE(this=ts.copy(), expression=lit(r.start_ms)))
            if r.end_ms is not None:
                parts.append(exp.LT(this=ts.copy(), expression=lit(r.end_ms)))
        elif r.kind == "parent":
            parent = self.ctx.parent_audience_id
            if parent is None:
                return FALSE
            entry = (
                exp.select("1")
                .from_(exp.to_table("memberships").as_("pm"))
                .where(
                    and_(
                        eq(col("mpid", "pm"), col("mpid", a)),
                        eq(col("audience_id", "pm"), lit(parent)),
                        exp.GT(this=ts.copy(), expression=col("entered_at", "pm")),
                    )
                )
            )
            parts.append(exp.Exists(this=entry))
        return and_(*parts)

    def selects(self, a: str, sel: core.Selector) -> exp.Expr:
        parts: list[exp.Expr] = []
        if sel.flag is not None:
            parts.append(sure(col(sel.flag, a)))
        if sel.event_type is not None:
            parts.append(eq(col("event_type", a), lit(sel.event_type)))
        if sel.name_lc is not None:
            parts.append(eq(col("name_lc", a), lit(sel.name_lc)))
        if sel.custom_event_type_lc is not None:
            parts.append(eq(self.d.lower(col("custom_event_type", a)), lit(sel.custom_event_type_lc)))
        if sel.action_lc is not None:
            parts.append(eq(col("action", a), lit(sel.action_lc)))
        parts.extend(self.where(a, c) for c in sel.where)
        return and_(*parts)

    def where(self, a: str, cond: Condition) -> exp.Expr:
        assert cond.attribute is not None
        if not cond.attribute.startswith("product."):
            return test_value(event_value_sql(self.d, a, cond.attribute), cond, self.now)
        key = cond.attribute[len("product.") :]
        products = self.d.json_elements(col("products", a))

        def item(x: exp.Expr) -> JsonValue:
            return JsonValue(self.d, self.d.json_get(x, key))

        if cond.op == "not_exists":
            return exp.Not(this=self.d.exists_element(products, f"_p{a}", lambda x: item(x).present()))
        now = self.now
        return self.d.exists_element(products, f"_p{a}", lambda x: test_value(item(x), cond, now))

    def exists_in(self, table: str, alias: str, *conds: exp.Expr) -> exp.Expr:
        own = eq(col("mpid", alias), col("mpid", USERS))
        return exp.Exists(this=exp.select("1").from_(exp.to_table(table).as_(alias)).where(and_(own, *conds)))

    # -- nodes ---------------------------------------------------------------------------
    def node(self, n: core.Node) -> exp.Expr:
        """A two-valued condition on the current `users` row."""
        if isinstance(n, core.And):
            return exp.Paren(this=and_(*(self.node(x) for x in n.items)))
        if isinstance(n, core.Or):
            return exp.Paren(this=or_(*(self.node(x) for x in n.items)))
        if isinstance(n, core.Not):
            return exp.Not(this=exp.Paren(this=self.node(n.item)))
        if isinstance(n, core.ValueTest):
            return self.value_test(n)
        if isinstance(n, core.ConsentTest):
            conds = [eq(col("regulation", "c"), lit(n.regulation)), eq(col("purpose", "c"), lit(n.purpose))]
            if n.state in ("consented", "not_consented"):
                conds.append(eq(col("consented", "c"), exp.Boolean(this=n.state == "consented")))
            found = self.exists_in("consents", "c", *conds)
            return exp.Not(this=found) if n.state == "not_present" else found
        if isinstance(n, core.EventTest):
            return self.event_test(n)
        if isinstance(n, core.SequenceTest):
            return self.sequence_test(n)
        if isinstance(n, core.MembershipTest):
            conds = [eq(col("audience_id", "m"), lit(n.audience_id))]
            if n.min_ms is not None:
                conds.append(exp.LTE(this=col("entered_at", "m"), expression=self.ago(n.min_ms)))
            found = self.exists_in("memberships", "m", *conds)
            return found if n.member else exp.Not(this=found)
        assert isinstance(n, core.ParentEntryTest)
        parent = self.ctx.parent_audience_id
        if parent is None:
            return FALSE
        at = col("entered_at", "pe")
        if n.op == "within_last":
            when = and_(
                exp.GT(this=at, expression=self.ago(n.ms)), exp.LTE(this=at.copy(), expression=self.ago())
            )
        else:
            when = exp.LTE(this=at, expression=self.ago(n.ms))
        return self.exists_in("memberships", "pe", eq(col("audience_id", "pe"), lit(parent)), when)

    def value_test(self, n: core.ValueTest) -> exp.Expr:
        now = self.now
        if n.source == "attribute":
            v: SqlValue = JsonValue(self.d, self.d.json_get(col("attributes", USERS), n.key))
            return test_value(v, n.cond, now)
        if n.source in ("first_seen", "last_seen"):
            return test_value(NumberValue(self.d, col(n.source, USERS)), n.cond, now)
        if n.source == "calculated":
            assert n.calc is not None
            name, value = calc_cte(self, n.calc)
            return test_value(value(col("v", name)), n.cond, now)
        if n.source == "identity":
            table, alias, column = "identities", "i", "value"
            own = [eq(col("identity_type", alias), lit(n.key))]
        else:
            table, alias, column = "devices", "dv", n.key
            own = []
        item = StringValue(self.d, col(column, alias))
        if n.cond.op == "not_exists":
            return exp.Not(this=self.exists_in(table, alias, *own, item.present()))
        return self.exists_in(table, alias, *own, test_value(item, n.cond, now))

    def event_test(self, n: core.EventTest) -> exp.Expr:
        a = "e"
        value = event_value_sql(self.d, a, n.attribute) if n.attribute else None
        agg: exp.Expr
        if n.fn == "count":
            agg = exp.Count(this=exp.Star()) if value is None else exp.Count(this=case_present(value))
        elif n.fn == "distinct":
            assert value is not None
            agg = exp.Count(this=exp.Distinct(expressions=[value.key()]))
        elif n.fn == "sum":
            assert value is not None
            agg = exp.Sum(this=value.decimal())
        else:
            assert value is not None
            cls = {"min": exp.Min, "max": exp.Max, "avg": exp.Avg}[n.fn]
            agg = cls(this=value.number())
        body = (
            exp.select(col("mpid", a), agg.as_("v"))
            .from_(exp.to_table("events").as_(a))
            .where(
                and_(
                    self.candidate_filter(col("mpid", a)),
                    self.scope(a),
                    self.in_range(a, n.window),
                    self.selects(a, n.selector),
                )
            )
            .group_by(col("mpid", a))
        )
        name = self.cte(("event", n), body)
        v = col("v", name)
        total: exp.Expr = v
        if n.fn in ("count", "distinct", "sum"):
            total = exp.Coalesce(this=v, expressions=[lit(0)])
        return test_value(NumberValue(self.d, total), n.test, self.now)

    def sequence_test(self, n: core.SequenceTest) -> exp.Expr:
        f, t = "f", "t"
        within = exp.Add(this=col("ts", f), expression=lit(n.within_ms))
        then = (
            exp.select("1")
            .from_(exp.to_table("events").as_(t))
            .where(
                and_(
                    eq(col("mpid", t), col("mpid", f)),
                    self.scope(t),
                    exp.LTE(this=col("ts", t), expression=self.ago()),
                    exp.GT(this=col("ts", t), expression=col("ts", f)),
                    exp.LTE(this=col("ts", t), expression=within),
                    self.selects(t, n.then),
                )
            )
        )
        follow: exp.Expr = exp.Exists(this=then)
        if not n.completed:
            follow = and_(exp.Not(this=follow), exp.GTE(this=self.ago(), expression=within.copy()))
        body = (
            exp.select(col("mpid", f))
            .distinct()
            .from_(exp.to_table("events").as_(f))
            .where(
                and_(
                    self.candidate_filter(col("mpid", f)),
                    self.scope(f),
                    self.in_range(f, n.window),
                    self.selects(f, n.first),
                    follow,
                )
            )
        )
        name = self.cte(("sequence", n), body)
        return exp.Not(this=exp.Is(this=col("mpid", name), expression=exp.Null()))

    # -- query ---------------------------------------------------------------------------
    def select(self, columns: list[exp.Expr], where: exp.Expr | None) -> exp.Select:
        # Built in place (copy=False): `q` is new here, and copying it per join or CTE is quadratic.
        q = exp.select(*columns).from_(exp.to_table("users").as_(USERS), copy=False)
        for _, name in sorted((n, n) for n in self.ctes.values()):
            on = eq(col("mpid", name), col("mpid", USERS))
            q = q.join(exp.to_table(name), on=on, join_type="left", copy=False)
        q = q.where(and_(self.candidate_filter(col("mpid", USERS)), where or TRUE), copy=False)
        for name, body in self.cte_bodies:
            q = q.with_(name, as_=body.copy(), copy=False)
        return q


def case_present(v: SqlValue) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=sure(v.present()), true=lit(1))], default=exp.Null())


def compile_criteria(criteria: Criteria, ctx: CompileContext) -> exp.Select:
    """`SELECT mpid FROM users WHERE <criteria>` as a sqlglot tree."""
    c = Compiler(ctx)
    cond = c.node(core.lower(criteria, ctx.calculated))
    return c.select([col("mpid", USERS)], cond)


def compile_many(
    criteria: Sequence[Criteria],
    ctx: CompileContext,
    parent_audience_ids: Sequence[int | None] | None = None,
) -> exp.Select:
    """`SELECT mpid, c0, c1, ... FROM users`: one boolean column per criterion, leaves shared.

    `parent_audience_ids[i]` overrides the context's parent audience for criterion i.
    """
    columns: list[exp.Expr] = [col("mpid", USERS)]
    shared = Compiler(ctx)
    for i, item in enumerate(criteria):
        sub = shared
        if parent_audience_ids is not None and parent_audience_ids[i] != ctx.parent_audience_id:
            sub = Compiler(replace(ctx, parent_audience_id=parent_audience_ids[i]))
            sub.ctes, sub.cte_bodies = shared.ctes, shared.cte_bodies
        columns.append(sub.node(core.lower(item, ctx.calculated)).as_(f"c{i}"))
    return shared.select(columns, None)


def to_sql(query: exp.Expr, dialect: Dialect = DUCKDB) -> str:
    return query.sql(dialect=dialect.name)
