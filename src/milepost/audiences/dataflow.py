"""The engine-neutral part of a journey evaluation: which queries run, in which order, writing what.

An evaluation is a list of steps: each journey's root, then each sibling group in dependency
order, in one or more segments. A step's query yields the new members `(audience_id, mpid)` of
the audiences it writes; the engine replaces their stored membership by those rows (keeping the
entry time of users who stay) before the next step, which may read it. A group's queries read
its parent's members from `eval_parent`: a view the Spark engine fills at the group's first step,
a CTE the embedded engine adds to each query (the root's own query when the root is not stored).
The embedded engine (`audiences/engine.py`) and the Spark engine (`engines/spark.py`) run the same
steps, compiled for their dialect.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sqlglot import exp

from milepost.audiences.boundaries import Boundaries, boundaries
from milepost.audiences.tree import (
    Child,
    JourneyRows,
    SiblingGroup,
    all_criteria,
    evaluation_order,
    root_audience_id,
    sibling_groups,
)
from milepost.criteria import CalculatedAttribute, CompileContext, compile_many, references
from milepost.criteria.dialect import Dialect, lit
from milepost.criteria.sqlvalues import before

PARENT_TABLE = "eval_parent"


@dataclass
class Plan:
    """What is maintained: the journeys' trees in evaluation order, and when users may next change."""

    journeys: tuple[JourneyRows, ...] = ()
    groups: list[SiblingGroup] = field(default_factory=list)
    calculated: Mapping[str, CalculatedAttribute] = field(default_factory=dict)
    boundaries: Boundaries | None = None
    maintained: frozenset[int] | None = None  # None: every audience of the journeys
    # Journey roots whose membership is stored: those whose entry time a child reads (`parent_entry`,
    # `since_parent_entry`). Every other root is evaluated inline where a child group reads it.
    stored_roots: frozenset[int] = frozenset()

    def keeps(self, audience_id: int) -> bool:
        return self.maintained is None or audience_id in self.maintained

    def audience_ids(self) -> list[int]:
        """Every audience whose membership the plan stores, stored journey roots included."""
        kept = [a for g in self.groups for a in g.audience_ids if self.keeps(a)]
        return kept + [
            root_audience_id(j.id) for j in self.journeys if root_audience_id(j.id) in self.stored_roots
        ]


def make_plan(
    journeys: Sequence[JourneyRows],
    calculated: Mapping[str, CalculatedAttribute],
    maintained: frozenset[int] | None,
    lookback_ms: int,
    lifetime_ms: int,
) -> Plan:
    groups = [
        g
        for g in evaluation_order(g for j in journeys for g in sibling_groups(j))
        if maintained is None or any(a in maintained for a in g.audience_ids)
    ]
    used = {g.journey_id for g in groups}
    return Plan(
        tuple(j for j in journeys if maintained is None or j.id in used),
        groups,
        dict(calculated),
        boundaries(all_criteria(groups), calculated.values(), lookback_ms, lifetime_ms),
        maintained,
        frozenset(
            g.parent_audience_id
            for g in groups
            if g.parent_audience_id == root_audience_id(g.journey_id)
            and any(c.criteria is not None and references(c.criteria).uses_parent_entry for c in g.children)
        ),
    )


@dataclass(frozen=True)
class Step:
    """One query of an evaluation and the audiences whose membership its rows replace."""

    writes: tuple[int, ...]
    query: exp.Select | None  # rows (audience_id, mpid); None: the audiences end up empty
    parent: int | None = None  # set on a group's first step: fill `eval_parent` with these members
    # The rows are every parent member's, with `tb` (their next event boundary, see
    # `CompileContext.timer_durations`) and a NULL audience for those in none of `writes`.
    bounds: bool = False


def root_query(
    journey: JourneyRows,
    now: int,
    lifetime_ms: int,
    dialect: Dialect,
    candidates: str | None = None,
    now_sql: exp.Expr | None = None,
) -> exp.Select:
    """Users active within the profile lifetime who sent data through one of the journey's inputs."""
    users = exp.to_table("users")
    last_seen = exp.column("last_seen")
    inputs = (
        dialect.list_has_any(exp.column("inputs"), journey.input_ids) if journey.input_ids else exp.false()
    )
    cond = exp.and_(
        exp.Not(this=exp.Is(this=last_seen, expression=exp.Null())),
        exp.GT(this=last_seen.copy(), expression=before(now if now_sql is None else now_sql, lifetime_ms)),
        inputs,
    )
    if candidates is not None:
        cond = exp.and_(cond, exp.column("mpid").isin(query=exp.select("mpid").from_(candidates)))
    return (
        exp.select(lit(root_audience_id(journey.id)).as_("audience_id"), exp.column("mpid"))
        .from_(users)
        .where(cond)
    )


def _first_passing(
    regular: list[Child], remaining: int | None, kept: tuple[int, ...] | None = None
) -> exp.Expr:
    """The audience of the first sibling whose criteria pass (`c0`, `c1`, ...), else `remaining`;
    with `kept`, NULL in place of an audience not in it."""

    def audience(a: int | None) -> exp.Expr:
        return exp.convert(a) if a is not None and (kept is None or a in kept) else exp.Null()

    return exp.Case(
        ifs=[exp.If(this=exp.column(f"c{i}"), true=audience(c.audience_id)) for i, c in enumerate(regular)],
        default=audience(remaining),
    )


def group_steps(
    group: SiblingGroup,
    plan: Plan,
    now: int,
    lookback_ms: int,
    dialect: Dialect,
    now_sql: exp.Expr | None = None,
    timer_durations: tuple[int, ...] = (),
    timer_own: exp.Expr | None = None,
) -> list[Step]:
    """A sibling group's steps: usually one; a child reading an earlier sibling's audience starts a
    new segment, so it sees that sibling's membership as this evaluation leaves it.

    `now_sql`: the instant as an expression bound per evaluation, so the steps can be reused.
    `timer_durations`: a group of one segment under its journey's root whose leaves scan events
    then gives a step with `bounds`; `timer_own` (`CompileContext.timer_own`) is then in its `tb`."""
    regular = [c for c in group.children if c.criteria is not None]
    remaining = next((c.audience_id for c in group.children if c.criteria is None), None)
    select = None
    dense = group.parent_audience_id == root_audience_id(group.journey_id)
    timers = timer_durations if dense and not group.segment_starts else ()
    if regular:
        ctx = CompileContext(
            now_ms=now,
            lookback_ms=lookback_ms,
            input_ids=group.input_ids,
            parent_audience_id=group.parent_audience_id,
            calculated=plan.calculated,
            candidates=PARENT_TABLE,
            dialect=dialect,
            now_sql=now_sql,
            # Under the root the parent is most users: filter the users, not every row a leaf reads.
            candidates_dense=dense,
            timer_durations=timers,
            timer_own=timer_own if timers else None,
            timer_kinds=plan.boundaries.event_kinds if timers and plan.boundaries else None,
        )
        query = compile_many([c.criteria for c in regular if c.criteria is not None], ctx)
        if "tb" in query.named_selects:
            # Every parent member's row: the user is taken by the first sibling whose criteria pass,
            # kept or not (a NULL audience).
            kept = tuple(c.audience_id for c in group.children if plan.keeps(c.audience_id))
            audience = _first_passing(regular, remaining, kept)
            rows = exp.select(audience.as_("audience_id"), exp.column("mpid"), exp.column("tb")).from_(
                query.subquery("q", copy=False)
            )
            return [Step(kept, rows, group.parent_audience_id, bounds=True)]
        if len(regular) == 1 and remaining is None:
            # One audience: its members are the rows passing its criteria, a filter DuckDB pushes
            # below the leaves' joins; filtering the CASE's result instead cost a fifth more CPU.
            only = regular[0].audience_id
            writes: tuple[int, ...] = (only,) if plan.keeps(only) else ()
            members = (
                exp.select(exp.convert(only).as_("audience_id"), exp.column("mpid"))
                .from_(query.subquery("q", copy=False))
                .where(exp.column("c0") if writes else "false")
            )
            return [Step(writes, members, group.parent_audience_id)]
        select = exp.select(_first_passing(regular, remaining).as_("audience_id"), exp.column("mpid")).from_(
            query.subquery("q", copy=False)
        )
    steps: list[Step] = []
    bounds = [0, *group.segment_starts, len(group.children)]
    for lo, hi in itertools.pairwise(bounds):
        if lo == hi:
            continue
        kept = tuple(c.audience_id for c in group.children[lo:hi] if plan.keeps(c.audience_id))
        step_query: exp.Select | None = None
        if select is not None:
            # A step writing every child picks every row the CASE gives an audience (a long IN list
            # costs DuckDB a join per evaluation).
            keep: exp.Expr | str = "false"
            if len(kept) == len(group.children):
                keep = exp.Not(this=exp.Is(this=exp.column("audience_id"), expression=exp.Null()))
            elif kept:
                keep = exp.column("audience_id").isin(*[exp.convert(a) for a in kept])
            step_query = (
                exp.select("audience_id", "mpid")
                .from_(select.subquery("p", copy=len(bounds) > 2))  # shared by segments
                .where(keep)
            )
        elif remaining is not None and remaining in kept:
            step_query = exp.select(lit(remaining).as_("audience_id"), exp.column("mpid")).from_(PARENT_TABLE)
        steps.append(Step(kept, step_query, group.parent_audience_id if not steps else None))
    return steps


def steps(
    plan: Plan,
    now: int,
    lookback_ms: int,
    lifetime_ms: int,
    dialect: Dialect,
    candidates: str | None = None,
) -> Iterator[Step]:
    """Every step of an evaluation of `plan` at `now`, in order (compiled lazily, group by group).

    Every journey root is a step here, stored or not: an engine that keeps its own membership
    between steps reads the roots from it; only `plan.audience_ids()` are stored afterwards."""
    for journey in plan.journeys:
        yield Step(
            (root_audience_id(journey.id),), root_query(journey, now, lifetime_ms, dialect, candidates)
        )
    for group in plan.groups:
        yield from group_steps(group, plan, now, lookback_ms, dialect)
