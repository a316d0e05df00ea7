"""The compiled SQL agrees with the reference evaluator on random criteria and random users."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from criteria_store import load
from criteria_strategies import DAY, NOW, calculated_definitions, criteria, users
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from milepost.criteria import (
    CompileContext,
    EvalContext,
    compile_criteria,
    compile_many,
    evaluate,
    parse_calculated_attribute,
    parse_criteria,
    to_json,
    to_sql,
)
from milepost.criteria.dialect import call, lit
from milepost.criteria.reference import UserData

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 6))
    people = [draw(users(mpid)) for mpid in range(1, n + 1)]
    memberships = []
    for u in people:
        for audience_id in (1, 2):
            if draw(st.booleans()):
                memberships.append(
                    (
                        audience_id,
                        u.mpid,
                        draw(st.sampled_from([NOW, NOW - 60_000, NOW - DAY, NOW - 3 * DAY, NOW - 9 * DAY])),
                    )
                )
    calcs = [parse_calculated_attribute(draw(calculated_definitions(f"calc{i}"))) for i in range(2)]
    return {
        "users": people,
        "memberships": memberships,
        "calculated": {c.name: c for c in calcs},
        "lookback": draw(st.sampled_from([30 * DAY, 90 * DAY])),
        "inputs": draw(st.sampled_from([None, (1,), (1, 2), ()])),
        "parent": draw(st.sampled_from([None, 1, 2])),
    }


def oracle(crit: Any, world: dict[str, Any]) -> set[int]:
    out = set()
    for u in world["users"]:
        assert isinstance(u, UserData)
        mine = {a: t for a, m, t in world["memberships"] if m == u.mpid}
        ctx = EvalContext(
            now_ms=NOW,
            lookback_ms=world["lookback"],
            input_ids=None if world["inputs"] is None else frozenset(world["inputs"]),
            memberships=mine,
            parent_entered_at=None if world["parent"] is None else mine.get(world["parent"]),
            calculated=world["calculated"],
        )
        if evaluate(crit, u, ctx):
            out.add(u.mpid)
    return out


def context(world: dict[str, Any], candidates: Any = None) -> CompileContext:
    return CompileContext(
        now_ms=NOW,
        lookback_ms=world["lookback"],
        input_ids=world["inputs"],
        parent_audience_id=world["parent"],
        calculated=world["calculated"],
        candidates=candidates,
    )


@PROPERTY
@given(raw=criteria, world=worlds())
def test_compiled_sql_matches_reference(raw: dict[str, Any], world: dict[str, Any]) -> None:
    crit = parse_criteria(raw)
    assert parse_criteria(to_json(crit)) == crit
    con = load(world["users"], world["memberships"])
    sql = to_sql(compile_criteria(crit, context(world)))
    got = {row[0] for row in con.execute(sql).fetchall()}
    assert got == oracle(crit, world), sql


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(criteria, min_size=1, max_size=3), world=worlds(), pick=st.sets(st.integers(1, 5)))
def test_compile_many_and_candidates_agree(
    raws: list[dict[str, Any]], world: dict[str, Any], pick: set[int]
) -> None:
    crits = [parse_criteria(r) for r in raws]
    con = load(world["users"], world["memberships"])
    rows = con.execute(to_sql(compile_many(crits, context(world)))).fetchall()
    for i, crit in enumerate(crits):
        assert {r[0] for r in rows if r[i + 1]} == oracle(crit, world)
    restricted = con.execute(to_sql(compile_criteria(crits[0], context(world, sorted(pick))))).fetchall()
    assert {r[0] for r in restricted} == oracle(crits[0], world) & pick
    # Candidates filtering the users only, not the rows each leaf reads: the same members.
    dense = replace(context(world, sorted(pick)), candidates_dense=True)
    assert {r[0] for r in con.execute(to_sql(compile_criteria(crits[0], dense))).fetchall()} == {
        r[0] for r in restricted
    }


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(criteria, min_size=1, max_size=3), world=worlds(), pick=st.sets(st.integers(1, 6)))
def test_candidates_table_matches_reference(
    raws: list[dict[str, Any]], world: dict[str, Any], pick: set[int]
) -> None:
    """Candidates as a table of users (as a journey's parent members are given): whether or not
    the query reads `users`, the members are the reference's among the candidates."""
    crits = [parse_criteria(r) for r in raws]
    con = load(world["users"], world["memberships"])
    known = {u.mpid for u in world["users"]}
    con.execute("CREATE TABLE picked AS SELECT unnest(?::BIGINT[]) AS mpid", [sorted(pick & known)])
    for dense in (False, True):
        ctx = replace(context(world, "picked"), candidates_dense=dense)
        rows = con.execute(to_sql(compile_many(crits, ctx))).fetchall()
        assert sorted(r[0] for r in rows) == sorted(pick & known)  # every candidate, once
        for i, crit in enumerate(crits):
            assert {r[0] for r in rows if r[i + 1]} == oracle(crit, world) & pick


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(raw=criteria, world=worlds(), shift=st.sampled_from([0, 7 * DAY, 40 * DAY]))
def test_instant_bound_per_evaluation_matches_reference(
    raw: dict[str, Any], world: dict[str, Any], shift: int
) -> None:
    """Compiled once with `now` as a session variable, the query answers for the instant it is run at."""
    crit = parse_criteria(raw)
    con = load(world["users"], world["memberships"])
    # Compiled at another instant: only the variable may carry `now` into the query.
    ctx = replace(context(world), now_ms=NOW - shift, now_sql=call("getvariable", lit("eval_now")))
    sql = to_sql(compile_criteria(crit, ctx))
    con.execute(f"SET VARIABLE eval_now = {NOW}::BIGINT")
    got = {row[0] for row in con.execute(sql).fetchall()}
    assert got == oracle(crit, world), sql
