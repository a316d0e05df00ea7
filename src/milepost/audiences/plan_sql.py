"""A plan's queries as SQL text for the engine: its journey roots in one step, and its sibling
groups' steps in batches of steps that read nothing another of the batch writes.

The text reads the evaluation's instant from a session variable (`NOW_SQL`), so a plan is compiled
once and every evaluation only binds its instant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from milepost.audiences.dataflow import PARENT_TABLE, Plan, group_steps, root_query
from milepost.audiences.timer_sql import own_boundary
from milepost.audiences.tree import SiblingGroup, root_audience_id
from milepost.criteria import to_sql
from milepost.criteria.dialect import DUCKDB, call, lit

# The instant of the running evaluation, a session variable of the engine's connection: compiled
# queries read it, so they are compiled once per plan.
NOW_VARIABLE = "milepost_eval_now"
NOW_SQL = call("getvariable", lit(NOW_VARIABLE))
SCOPED_TABLES = ("events", "users", "identities", "consents", "devices")


@dataclass(frozen=True)
class SqlStep:
    """A step as SQL text: its rows `(audience_id, mpid)` replace the membership of `writes`."""

    writes: tuple[int, ...]
    sql: str | None  # None: the audiences end up empty
    parent: int | None  # the audience whose members the query reads (as `eval_parent`)
    number: int = 0  # its place in the plan's order, which orders the change log
    bounds: bool = False  # rows carry `tb` and non-members (`Step.bounds`)
    bounds_own: bool = False  # `tb` covers the users' own boundary too (`timer_sql.own_boundary`)


@dataclass(frozen=True)
class Compiled:
    roots: SqlStep | None
    # Steps in batches: the steps of one batch read nothing another writes, so they run as one
    # statement (each statement costs DuckDB a fixed setup per operator and per diff).
    batches: list[list[SqlStep]]
    # Column names the queries refer to (None: a query reads whole rows): a scoped evaluation
    # copies only these columns of the candidates' events.
    columns: frozenset[str] | None = None
    # Tables the queries read: a scoped evaluation copies only those (and what timers read).
    tables: frozenset[str] = frozenset(SCOPED_TABLES)


def _tables(queries: Sequence[exp.Expr]) -> frozenset[str]:
    return frozenset(t.name.lower() for q in queries for t in q.find_all(exp.Table))


def _columns(queries: Sequence[exp.Expr]) -> frozenset[str] | None:
    """Every column name the queries mention, or None when one selects whole rows (`*`, `t.*`)."""
    names: set[str] = set()
    for q in queries:
        for star in q.find_all(exp.Star):
            if not isinstance(star.parent, exp.AggFunc):  # count(*) reads no column
                return None
        names.update(c.name.lower() for c in q.find_all(exp.Column))
    return frozenset(names)


def _with_parent(
    query: exp.Select, group: SiblingGroup, root: exp.Select | None = None, own: exp.Expr | None = None
) -> exp.Select:
    """The query reading its parent's members inline from the (scoped) memberships, or from `root`
    (a journey root's query) when the parent is a root whose membership is not stored; `own`: the
    root's users' own timer boundary, carried as `ub` (`CompileContext.timer_own`)."""
    if root is not None:
        parent = root.copy()
        parent.set("expressions", [exp.column("mpid"), *([own.copy().as_("ub")] if own is not None else [])])
    else:
        parent = (
            exp.select("mpid")
            .from_("memberships")
            .where(exp.column("audience_id").eq(exp.convert(group.parent_audience_id)))
        )
    return query.with_(PARENT_TABLE, as_=parent)


def compile_plan(plan: Plan, lookback: int, lifetime: int, timers: tuple[int, ...] = ()) -> Compiled:
    """`timers`: the event durations of a full calculation of one journey, whose root's children
    then also give every member's next event boundary (`Step.bounds`)."""
    b = plan.boundaries
    root_of = {
        root_audience_id(j.id): root_query(j, 0, lifetime, DUCKDB, None, NOW_SQL) for j in plan.journeys
    }
    roots = [q for a, q in root_of.items() if a in plan.stored_roots]
    queries: list[exp.Expr] = list(roots)
    root_step = None
    if roots:
        union: exp.Query = roots[0]
        for q in roots[1:]:
            union = exp.union(union, q, distinct=False)
        root_step = SqlStep(tuple(a for a in root_of if a in plan.stored_roots), to_sql(union), None, 1)
    # A group's level: past every group computing an audience it reads; within a group,
    # each segment follows the previous one.
    produced = {a: g for g in plan.groups for a in g.audience_ids}
    level: dict[int, int] = {}
    batches: dict[tuple[int, int], list[SqlStep]] = {}
    number = 1
    for g in plan.groups:  # dependency order: producers come first
        level[id(g)] = 1 + max(
            (level[id(produced[d])] for d in g.depends_on if d in produced and produced[d] is not g),
            default=0,
        )
        # A root not stored is read inline; its size is then unknown (no parent to skip on).
        inline = root_of.get(g.parent_audience_id) if g.parent_audience_id not in plan.stored_roots else None
        own = own_boundary(b, NOW_SQL) if timers and b is not None and inline is not None else None
        for segment, st in enumerate(group_steps(g, plan, 0, lookback, DUCKDB, NOW_SQL, timers, own)):
            number += 1
            sql = None
            if st.query is not None:
                query = _with_parent(st.query, g, inline, own if st.bounds else None)
                queries.append(query)
                sql = to_sql(query)
            parent = None if inline is not None else g.parent_audience_id
            bounds = st.bounds and sql is not None
            step = SqlStep(st.writes, sql, parent, number, bounds, bounds and own is not None)
            batches.setdefault((level[id(g)], segment), []).append(step)
    return Compiled(root_step, [batches[k] for k in sorted(batches)], _columns(queries), _tables(queries))
