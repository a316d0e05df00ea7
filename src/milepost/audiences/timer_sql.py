"""The statement writing each user's next timer: the earliest instant their truth can change
(`audiences.boundaries`), one grouped pass per time source, no cross joins.

A full calculation whose journey root's children scan events has those boundaries already (the
`tb` column of `Step.bounds` rows, computed over the same events with the same durations); the
events are then not read a second time. When the root is read inline, `tb` also holds the users'
own boundary (`own_boundary`, computed where the root reads `users`), so the profiles are not read
a second time either.
"""

from __future__ import annotations

from sqlglot import exp

from milepost.audiences.boundaries import Boundaries
from milepost.audiences.dataflow import Plan
from milepost.criteria import to_sql
from milepost.criteria.compile import any_kind, paren
from milepost.criteria.core import Selector
from milepost.criteria.dialect import DUCKDB, call, lit
from milepost.criteria.sqlvalues import Instant, and_, before, next_boundary


def _future(at: exp.Expr, now: Instant) -> exp.Expr:
    """`at` when it is after now, else NULL (which LEAST skips): a past instant is no timer."""
    return exp.Case(ifs=[exp.If(this=exp.GT(this=at, expression=before(now)), true=at.copy())])


def _later(column: str, durations: list[int], now: Instant) -> list[exp.Expr]:
    """`column + d` for each duration that takes it past now (NULL for the others)."""
    return [_future(exp.Add(this=exp.column(column), expression=lit(d)), now) for d in durations]


def own_boundary(b: Boundaries, now: Instant) -> exp.Expr:
    """Each user's next boundary from their profile row alone (`users` columns): seen times plus
    the lifetime and first/last-seen durations, date attributes plus their rolling durations.
    Without a first/last-seen leaf, the seen times give only the end of the lifetime (first seen
    plus the lifetime, earlier, flips nothing), and with `members_only` not even that (`timers_sql`
    adds it for members); NULL when nothing is left."""
    own: list[exp.Expr] = []
    if b.seen_leaf:
        seen = sorted(int(d) for d in b.seen_durations_ms)
        own = [*_later("last_seen", seen, now), *_later("first_seen", seen, now)]
    elif not members_only(b):  # only the end of the lifetime (the longest), when the root is left
        own = _later("last_seen", [max(int(d) for d in b.seen_durations_ms)], now)
    for attribute, duration in sorted(b.attribute_durations):
        value = DUCKDB.json_get(exp.column("attributes"), attribute)
        text = DUCKDB.json_text(value)
        as_ms = exp.Coalesce(
            this=DUCKDB.iso_epoch_ms(text),
            expressions=[exp.TryCast(this=text, to=exp.DataType.build("BIGINT"))],
        )
        own.append(_future(exp.Add(this=as_ms, expression=lit(int(duration))), now))
    if not own:
        return exp.cast(exp.Null(), "BIGINT")
    return call("least", *own)  # NULLs skipped, as LEAST does in DuckDB


def members_only(b: Boundaries) -> bool:
    """Whether the seen times give only members a timer: with no first/last-seen leaf they matter
    only at the end of the lifetime, when the user leaves the journey roots, which can end
    memberships (the roots' stored ones included) but start none. Only when no leaf reads events:
    then a user in no audience needs no timer at all (for a million root users, a tenth of them
    members, the timers cost a third of the CPU one row per root user did), while a plan reading
    events gives most root users an event boundary anyway, and finding the members cost it more
    than the rows saved."""
    return not b.seen_leaf and not b.event_durations_ms


def event_boundaries_sql(durations: list[int], now: Instant, kinds: tuple[Selector, ...] | None) -> str:
    """Each user's next event boundary (`sqlvalues.next_boundary`), over the events that can have
    one: dated late enough, of a kind a leaf reads (`Boundaries.event_kinds`)."""
    ts = exp.column("ts", table="e")
    query = (
        exp.select(exp.column("mpid", table="e"), exp.Min(this=next_boundary(ts, durations, now)).as_("b"))
        .from_(exp.to_table("events").as_("e"))
        .where(
            and_(
                exp.GT(this=ts.copy(), expression=before(now, max(durations))),
                paren(any_kind(DUCKDB, "e", kinds)),
            )
        )
        .group_by(exp.column("mpid", table="e"))
    )
    return to_sql(query)


def timers_sql(
    plan: Plan, now: Instant, lifetime_ms: int, bounds: str | None = None, bounds_own: bool = False
) -> str | None:
    """`INSERT INTO timers` for the plan's users at `now` (None: no user needs one). `bounds`: a
    table of `Step.bounds` rows covering every root member, read instead of the events;
    `bounds_own`: its `tb` holds the users' own boundary too, and its rows are the root's members.
    With `now` an expression (the engine's session variable) the text is the same at every
    instant: it is built once per plan, not with sqlglot in every evaluation."""
    b = plan.boundaries
    if b is None or not plan.journeys:
        return None
    # Only a journey root's members can be in an audience, and time alone never brings a user
    # into a root (it only ends their lifetime): users outside every root need no timer.
    inputs = sorted({i for j in plan.journeys for i in j.input_ids})
    if not inputs:
        return None
    grouped: list[str] = []  # per-user minimums of the other sources
    if bounds is not None and bounds_own:
        users = f"SELECT mpid, tb AS b FROM {bounds}"
    else:
        # Each time source with only the durations that can flip a leaf reading it. Only users
        # with a profile row can be members (the root reads `users`), so the grouped sources are
        # joined to the profile's one row per user rather than unioned and grouped again.
        in_root = to_sql(DUCKDB.list_has_any(exp.column("inputs"), tuple(inputs)))
        alive = to_sql(before(now, int(lifetime_ms)))
        own, where = to_sql(own_boundary(b, now)), f"last_seen > {alive} AND {in_root}"
        if members_only(b):
            member, end = "mpid IN (SELECT mpid FROM memberships)", f"last_seen + {int(lifetime_ms)}"
            if b.attribute_durations:
                own = f"least({own}, CASE WHEN {member} THEN {end} END)"
            else:  # only members have a boundary
                own, where = end, f"{where} AND {member}"
        users = f"SELECT mpid, {own} AS b FROM users WHERE {where}"
        if b.event_durations_ms and bounds is not None:
            grouped.append(f"SELECT mpid, tb AS b FROM {bounds}")
        elif b.event_durations_ms:
            durations = [int(d) for d in b.event_durations_ms]
            grouped.append(event_boundaries_sql(durations, now, b.event_kinds))
    if b.entry_durations_ms:
        entry = sorted(int(d) for d in b.entry_durations_ms)
        later = ", ".join(to_sql(e) for e in _later("entered_at", entry, now))
        grouped.append(f"SELECT mpid, min(least({later})) AS b FROM memberships GROUP BY mpid")
    joins = "".join(f" LEFT JOIN ({q}) g{i} USING (mpid)" for i, q in enumerate(grouped))
    due = ", ".join(["u.b", *(f"g{i}.b" for i in range(len(grouped)))])
    return (
        f"INSERT INTO timers SELECT * FROM (SELECT mpid, least({due}) AS b FROM ({users}) u{joins}) "
        f"WHERE b > {to_sql(before(now))}"
    )


class TimerStatements:
    """`timers_sql` at an instant bound per evaluation (`now`, an expression), built once per
    plan, lifetime and bounds table: building it with sqlglot took a real-time evaluation 2-4 ms."""

    def __init__(self, now: exp.Expr) -> None:
        self.now = now
        self._plan: Plan | None = None  # the plan the texts were built for
        self._texts: dict[tuple[int, str | None, bool], str | None] = {}

    def sql(
        self, plan: Plan, lifetime_ms: int, bounds: str | None = None, bounds_own: bool = False
    ) -> str | None:
        if plan is not self._plan:
            self._plan, self._texts = plan, {}
        key = (int(lifetime_ms), bounds, bounds_own)
        if key not in self._texts:
            self._texts[key] = timers_sql(plan, self.now, lifetime_ms, bounds, bounds_own)
        return self._texts[key]
