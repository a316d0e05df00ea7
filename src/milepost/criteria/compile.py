"""Compile criteria to one sqlglot SELECT over the store tables (docs/store-layout.md).

Event, sequence and calculated-attribute leaves become grouped CTEs joined to `users`, shared
between all criteria compiled together, and so do the tests for a row of the user in another
table (consents, identities, devices, memberships); user attributes are read from `users`. Event
leaves whose windows nest share one grouped pass over `events`, one aggregate column per leaf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlglot import exp

from milepost.criteria import core
from milepost.criteria.aggregates import calc_cte, event_value_sql
from milepost.criteria.dialect import DUCKDB, Dialect, call, lit
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
    next_boundary,
    not_,
    or_,
    sure,
    test_value,
)

USERS = "u"
USERS_TABLE = "users"


@dataclass(frozen=True)
class CompileContext:
    """Everything outside the criteria that the query depends on."""

    now_ms: int
    lookback_ms: int
    input_ids: tuple[int, ...] | None = None  # None: every input
    parent_audience_id: int | None = None
    calculated: Mapping[str, CalculatedAttribute] = field(default_factory=dict)
    # mpids, or a table whose `mpid` column holds distinct users' mpids (a query reading no column
    # of `users` then starts from it instead)
    candidates: Sequence[int] | str | None = None
    dialect: Dialect = DUCKDB
    # The instant as an SQL expression bound per evaluation (one compiled query serves every
    # evaluation); None: `now_ms` as literals.
    now_sql: exp.Expr | None = None
    # The candidates are most users with rows in the tables read (a journey's root): only the
    # users are filtered, as testing each row a leaf reads against them costs more than it saves.
    candidates_dense: bool = False
    # Durations of the users' next timers (`audiences.boundaries`): when set, the scan of the leaves
    # with relative windows reads every event dated after now minus the longest, each leaf
    # filtering its own, and the query gains `tb`, each user's next event boundary, so that a full
    # calculation's timers need no second pass over the events. Only for dense candidates.
    timer_durations: tuple[int, ...] = ()
    # With `timer_durations`: each user's own next boundary, over columns of `users`; `tb` then
    # covers it too. A query starting from the candidates table reads it there, as `ub`.
    timer_own: exp.Expr | None = None
    # With `timer_durations`: the kinds of event whose times can flip a leaf (`Boundaries.event_kinds`;
    # None: every event). The scan carrying `tb` reads only those.
    timer_kinds: tuple[core.Selector, ...] | None = None


def col(name: str, table: str) -> exp.Column:
    return exp.column(name, table=table)


def eq(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    return exp.EQ(this=a, expression=b)


@dataclass
class EventScan:
    """Event leaves answered by one grouped pass over `events`: leaf -> (column, rows, aggregate).

    `rows` is (time range, selector's condition); `aggregate` is (function, argument): the
    argument None counts rows."""

    ranges: list[core.TimeRange] = field(default_factory=list)
    leaves: dict[
        core.EventTest,
        tuple[str, tuple[core.TimeRange, exp.Expr], tuple[type[exp.Func], exp.Expr | None]],
    ] = field(default_factory=dict)


def scan_group(r: core.TimeRange) -> object | None:
    """Leaves whose windows fall in one group share a scan: relative windows all read within the
    widest of them, absolute ones only with the same bounds; parent windows scan alone."""
    if r.kind in ("lookback", "rolling"):
        return "relative"
    if r.kind == "absolute":
        return ("absolute", r.start_ms, r.end_ms)
    if r.kind == "all":
        return "all"
    return None


def event_kind(d: Dialect, a: str, sel: core.Selector) -> exp.Expr:
    """Events of the selector's kind (type, name, custom type, action, install/upgrade flag); its
    conditions on attributes (`where`) aside."""
    parts: list[exp.Expr] = []
    if sel.flag is not None:
        parts.append(sure(col(sel.flag, a)))
    if sel.event_type is not None:
        parts.append(eq(col("event_type", a), lit(sel.event_type)))
    if sel.name_lc is not None:
        parts.append(eq(col("name_lc", a), lit(sel.name_lc)))
    if sel.custom_event_type_lc is not None:
        parts.append(eq(d.lower(col("custom_event_type", a)), lit(sel.custom_event_type_lc)))
    if sel.action_lc is not None:
        parts.append(eq(col("action", a), lit(sel.action_lc)))
    return and_(*parts)


def any_kind(d: Dialect, a: str, kinds: Sequence[core.Selector] | None) -> exp.Expr:
    """Events of any of these kinds (None: every event)."""
    if kinds is None:
        return TRUE
    return or_(*(paren(event_kind(d, a, k)) for k in kinds)) if kinds else FALSE


class Compiler:
    """Builds conditions for one query, collecting the CTEs they need (deduplicated)."""

    def __init__(self, ctx: CompileContext) -> None:
        self.ctx = ctx
        self.d = ctx.dialect
        self.ctes: dict[object, str] = {}
        self.cte_bodies: list[tuple[str, exp.Select | EventScan]] = []
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

    def leaf_filter(self, mpid: exp.Expr) -> exp.Expr:
        """The candidate filter on the rows a leaf reads (the users are always filtered)."""
        return TRUE if self.ctx.candidates_dense else self.candidate_filter(mpid)

    def cte(self, key: object, body: exp.Select | EventScan) -> str:
        key = (key, self.ctx.parent_audience_id)
        if key not in self.ctes:
            name = f"leaf_{len(self.ctes)}"
            self.ctes[key] = name
            self.cte_bodies.append((name, body))
        return self.ctes[key]

    def scan(self, name: str) -> EventScan:
        return next(b for n, b in self.cte_bodies if n == name and isinstance(b, EventScan))

    def scope(self, a: str) -> exp.Expr:
        ids = self.ctx.input_ids
        if ids is None:
            return TRUE
        if not ids:
            return FALSE
        if len(ids) == 1:
            return eq(col("input_id", a), lit(int(ids[0])))
        return exp.In(this=col("input_id", a), expressions=[lit(int(i)) for i in ids])

    def in_range(self, a: str, r: core.TimeRange) -> exp.Expr:
        ts = col("ts", a)
        # A rolling range's newer bound is the cap at now when it is 0, and below it otherwise.
        newer = r.newer_ms if r.kind == "rolling" else 0
        parts: list[exp.Expr] = [exp.LTE(this=ts, expression=self.ago(newer))]
        if r.kind == "lookback":
            parts.append(exp.GT(this=ts.copy(), expression=self.ago(self.ctx.lookback_ms)))
        elif r.kind == "rolling":
            parts.append(exp.GT(this=ts.copy(), expression=self.ago(r.older_ms)))
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
        return and_(event_kind(self.d, a, sel), *(self.where(a, c) for c in sel.where))

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

    def exists_in(self, table: str, alias: str, *conds: exp.Expr, unique: bool = False) -> exp.Expr:
        """The user has a row in `table` passing `conds`. A CTE of those users joined like the
        event leaves, not a correlated EXISTS: DuckDB plans that one in a select list as a join
        against every distinct outer user, at many times the cost of the join.

        `unique`: `conds` fix the rest of the table's key, so each user has at most one such row."""
        mpid = col("mpid", alias)
        body = (
            exp.select(mpid)
            .distinct(distinct=not unique)
            .from_(exp.to_table(table).as_(alias))
            .where(and_(self.leaf_filter(mpid.copy()), *conds))
        )
        name = self.cte(("exists", body.sql(dialect=self.d.name)), body)
        return exp.Not(this=exp.Is(this=col("mpid", name), expression=exp.Null()))

    # -- nodes ---------------------------------------------------------------------------
    def node(self, n: core.Node) -> exp.Expr:
        """A two-valued condition on the current `users` row."""
        if isinstance(n, core.And):
            return paren(and_(*(self.node(x) for x in n.items)))
        if isinstance(n, core.Or):
            return paren(or_(*(self.node(x) for x in n.items)))
        if isinstance(n, core.Not):
            return not_(paren(self.node(n.item)))
        if isinstance(n, core.ValueTest):
            return self.value_test(n)
        if isinstance(n, core.ConsentTest):
            conds = [eq(col("regulation", "c"), lit(n.regulation)), eq(col("purpose", "c"), lit(n.purpose))]
            if n.state in ("consented", "not_consented"):
                conds.append(eq(col("consented", "c"), exp.Boolean(this=n.state == "consented")))
            found = self.exists_in("consents", "c", *conds, unique=True)  # key (mpid, regulation, purpose)
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
        agg: tuple[type[exp.Func], exp.Expr | None]
        if n.fn == "count":
            agg = (exp.Count, None if value is None else case_present(value))
        elif n.fn == "distinct":
            assert value is not None
            agg = (exp.Count, exp.Distinct(expressions=[value.key()]))
        elif n.fn == "sum":
            assert value is not None
            agg = (exp.Sum, value.decimal())
        else:
            assert value is not None
            agg = ({"min": exp.Min, "max": exp.Max, "avg": exp.Avg}[n.fn], value.number())
        group = scan_group(n.window)
        scan = EventScan()
        name = self.cte(("event", n) if group is None else ("events", group), scan)
        scan = self.scan(name)
        if n not in scan.leaves:
            scan.ranges.append(n.window)
            scan.leaves[n] = (f"v{len(scan.leaves)}", (n.window, self.selects(a, n.selector)), agg)
        v = col(scan.leaves[n][0], name)
        total: exp.Expr = v
        if n.fn in ("count", "distinct", "sum"):
            total = exp.Coalesce(this=v, expressions=[lit(0)])
        return test_value(NumberValue(self.d, total), n.test, self.now)

    def timer_scan(self) -> str | None:
        """The CTE carrying `tb` (the scan of leaves with relative windows), if timers are fused."""
        if not self.ctx.timer_durations or not self.ctx.candidates_dense:
            return None
        return self.ctes.get((("events", "relative"), self.ctx.parent_audience_id))

    def scan_body(self, scan: EventScan) -> exp.Select:
        """One leaf: its rows grouped. Several: the rows of any, each aggregate over its own rows."""
        a = "e"
        leaves = list(scan.leaves.values())
        if self.timer_scan() is not None and scan.ranges[0].kind in ("lookback", "rolling"):
            return self.timer_scan_body(scan)
        if len(leaves) == 1:
            (column, (r, sel), (fn, arg)) = leaves[0]
            rows = and_(self.in_range(a, r), sel)
            aggs = [aggregate(fn, arg, None).as_(column)]
        else:
            # Each leaf's rows, less the bounds the scan already applies to all of them.
            own = [and_(*self.within_bounds(a, r, scan.ranges), sel) for _, (r, sel), _ in leaves]
            rows = and_(self.bounds(a, scan.ranges), paren(or_(*own)))
            aggs = [
                aggregate(fn, arg, o).as_(column)
                for (column, _, (fn, arg)), o in zip(leaves, own, strict=True)
            ]
        return (
            exp.select(col("mpid", a), *aggs)
            .from_(exp.to_table("events").as_(a))
            .where(and_(self.leaf_filter(col("mpid", a)), self.scope(a), rows))
            .group_by(col("mpid", a))
        )

    def timer_scan_body(self, scan: EventScan) -> exp.Select:
        """Every event the timers read (as `timer_sql.event_boundaries_sql` does), each leaf aggregating
        its own rows, and `tb`: the earliest instant one of them crosses a duration."""
        a = "e"
        ts = col("ts", a)
        durations = sorted(self.ctx.timer_durations)
        aggs = [
            aggregate(fn, arg, and_(self.scope(a), self.in_range(a, r), sel)).as_(column)
            for column, (r, sel), (fn, arg) in scan.leaves.values()
        ]
        return (
            exp.select(col("mpid", a), *aggs, exp.Min(this=next_boundary(ts, durations, self.now)).as_("tb"))
            .from_(exp.to_table("events").as_(a))
            .where(
                and_(
                    exp.GT(this=ts, expression=self.ago(durations[-1])),
                    paren(any_kind(self.d, a, self.ctx.timer_kinds)),
                )
            )
            .group_by(col("mpid", a))
        )

    def older(self, r: core.TimeRange) -> int:
        return self.ctx.lookback_ms if r.kind == "lookback" else r.older_ms

    def bounds(self, a: str, ranges: list[core.TimeRange]) -> exp.Expr:
        """Time bounds every range of one scan group lies within (each leaf keeps its own)."""
        ts = col("ts", a)
        if ranges[0].kind == "absolute":
            return self.in_range(a, ranges[0])  # the group's ranges are all the same
        upper = exp.LTE(this=ts, expression=self.ago())
        if ranges[0].kind == "all":
            return upper
        older = max(self.older(r) for r in ranges)
        return and_(upper, exp.GT(this=ts.copy(), expression=self.ago(older)))

    def within_bounds(self, a: str, r: core.TimeRange, ranges: list[core.TimeRange]) -> list[exp.Expr]:
        """The tests of range `r` that the group's `bounds` do not already imply."""
        if r.kind in ("absolute", "all"):
            return []  # the group's ranges are all the same
        ts = col("ts", a)
        parts: list[exp.Expr] = []
        if r.kind == "rolling" and r.newer_ms:
            parts.append(exp.LTE(this=ts, expression=self.ago(r.newer_ms)))
        if self.older(r) < max(self.older(x) for x in ranges):
            parts.append(exp.GT(this=ts.copy(), expression=self.ago(self.older(r))))
        return parts

    def sequence_test(self, n: core.SequenceTest) -> exp.Expr:
        f, t = "f", "t"
        within = exp.Add(this=col("ts", f), expression=lit(n.within_ms))
        then = (
            exp.select(col("mpid", t), col("ts", t))
            .from_(exp.to_table("events").as_(t))
            .where(
                and_(
                    self.leaf_filter(col("mpid", t)),
                    self.scope(t),
                    exp.LTE(this=col("ts", t), expression=self.ago()),
                    self.selects(t, n.then),
                )
            )
        )
        follows = and_(
            eq(col("mpid", t), col("mpid", f)),
            exp.GT(this=col("ts", t), expression=col("ts", f)),
            exp.LTE(this=col("ts", t), expression=within),
        )
        # A semi (anti) join, not a correlated (NOT) EXISTS: DuckDB plans that one with a
        # deduplicated copy of the first events, about 40% more CPU for a million users.
        elapsed = TRUE if n.completed else exp.GTE(this=self.ago(), expression=within.copy())
        body = (
            exp.select(col("mpid", f))
            .distinct()
            .from_(exp.to_table("events").as_(f))
            .join(then.subquery(t), on=follows, join_type="semi" if n.completed else "anti")
            .where(
                and_(
                    self.leaf_filter(col("mpid", f)),
                    self.scope(f),
                    self.in_range(f, n.window),
                    self.selects(f, n.first),
                    elapsed,
                )
            )
        )
        name = self.cte(("sequence", n), body)
        return exp.Not(this=exp.Is(this=col("mpid", name), expression=exp.Null()))

    # -- query ---------------------------------------------------------------------------
    def select(self, columns: list[exp.Expr], where: exp.Expr | None) -> exp.Select:
        # Built in place (copy=False): `q` is new here, and copying it per join or CTE is quadratic.
        source, users_filter = USERS_TABLE, self.candidate_filter(col("mpid", USERS))
        read = [e for e in (*columns, where) if e is not None]
        if isinstance(self.ctx.candidates, str) and not any(
            c.table == USERS and c.name != "mpid" for e in read for c in e.find_all(exp.Column)
        ):
            source, users_filter = self.ctx.candidates, TRUE  # no user column read: no join to `users`
        timers = self.timer_scan()
        if timers is not None:
            tb: exp.Expr = col("tb", timers)
            own = self.ctx.timer_own
            if own is not None:
                if source == USERS_TABLE:
                    own = own.copy()
                    for c in own.find_all(exp.Column):
                        c.set("table", exp.to_identifier(USERS))
                else:
                    own = col("ub", USERS)
                tb = call("least", own, tb)  # NULLs skipped: a user without events keeps their own
            columns = [*columns, tb.as_("tb")]
        q = exp.select(*columns).from_(exp.to_table(source).as_(USERS), copy=False)
        for _, name in sorted((n, n) for n in self.ctes.values()):
            on = eq(col("mpid", name), col("mpid", USERS))
            q = q.join(exp.to_table(name), on=on, join_type="left", copy=False)
        cond = and_(users_filter, where or TRUE)
        if not (isinstance(cond, exp.Boolean) and cond.this is True):
            q = q.where(cond, copy=False)
        for name, body in self.cte_bodies:
            built = self.scan_body(body) if isinstance(body, EventScan) else body.copy()
            q = q.with_(name, as_=built, copy=False)
        return q


def paren(e: exp.Expr) -> exp.Expr:
    """`(e)`; constants stay bare so that enclosing conditions can fold them."""
    return e if isinstance(e, exp.Boolean | exp.Paren) else exp.Paren(this=e)


def case_present(v: SqlValue) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=sure(v.present()), true=lit(1))], default=exp.Null())


def aggregate(fn: type[exp.Func], arg: exp.Expr | None, rows: exp.Expr | None) -> exp.Expr:
    """`fn(arg)` (`count(*)` for no argument) over the rows passing `rows` (None: all)."""
    if rows is None:
        return fn(this=exp.Star() if arg is None else arg.copy())
    only = lambda e: exp.Case(ifs=[exp.If(this=rows.copy(), true=e)], default=exp.Null())  # noqa: E731
    if arg is None:
        return fn(this=only(lit(1)))
    if isinstance(arg, exp.Distinct):
        return fn(this=exp.Distinct(expressions=[only(arg.expressions[0].copy())]))
    return fn(this=only(arg.copy()))


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
