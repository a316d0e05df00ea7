"""A full calculation of audiences with no stored member writes their rows straight into memberships
and logs them from there (`AudienceEngine._enter`): it must leave the memberships, the change log
(in seq order) and the result that the diff through `eval_diff` and `eval_log` leaves."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.audiences.test_engine import DAY, T0, World, journey, ms
from tests.audiences.test_fused_timers import JOURNEYS, _reset, ev, last, send_users

CASES = {
    **JOURNEYS,
    # The child's audience id below its parent's: the log is in step order, not audience order.
    "a child numbered before its parent": journey(
        ms(1, 202, ev("watch", 1, last(5))), ms(2, 201, ev("open", 1, last(7)), parent=1)
    ),
}


def _send(world: World, rng: random.Random) -> None:
    """Users with a few recent events each: most journeys' audiences have members."""
    send_users(world, rng, max_events=8, ages=(0, 6 * DAY))


def _log(world: World) -> list[Any]:
    return world.engine.con.execute(
        "SELECT seq - min(seq) OVER (), audience_id, mpid, action, changed_at, cause FROM membership_changes "
        "ORDER BY seq"
    ).fetchall()


def _members(world: World) -> list[Any]:
    return world.engine.con.execute("SELECT * FROM memberships ORDER BY ALL").fetchall()


@pytest.mark.parametrize("name", list(CASES))
def test_entries_written_straight_agree_with_the_diff(world: World, name: str) -> None:
    world.engine.configure([CASES[name]], {})
    _send(world, random.Random(name))
    entered: list[list[int]] = []
    enter = world.engine._enter

    def spy(audience_ids: list[int], *a: Any) -> None:
        entered.append(audience_ids)
        enter(audience_ids, *a)

    world.engine._enter = spy  # type: ignore[method-assign]
    for now in (T0, T0 + 3 * DAY):
        _reset(world)
        entered.clear()
        full = world.engine.full_calculation(now)
        assert entered, "the path under test is taken"
        state, calls = (_members(world), _log(world)), len(entered)
        _reset(world)
        scoped = world.engine.evaluate(now, list(range(1, 61)), "full")
        assert len(entered) == calls  # a scoped evaluation diffs
        assert (_members(world), _log(world)) == state
        assert (full.adds, full.removes, full.per_audience) == (scoped.adds, 0, scoped.per_audience)
        assert full.adds == len(state[1])
        assert state[0], "some users are members"


@pytest.mark.parametrize("name", ["siblings, rest and a child", "a child numbered before its parent"])
def test_entries_beside_diffed_audiences_agree_with_the_diff(world: World, name: str) -> None:
    """A full calculation where one audience has no stored member (new) and the others have some:
    its entries are logged from memberships beside the others' diffs, in step order."""
    world.engine.configure([CASES[name]], {})
    _send(world, random.Random(name))
    rows = CASES[name].milestones
    child = next(r for r in rows if r.parent_id is not None)
    parent = next(r.audience_id for r in rows if r.id == child.parent_id)
    child_id = child.audience_id
    flushed: list[tuple[dict[int, int], bool]] = []
    flush = world.engine._flush

    def spy(*a: Any, **k: Any) -> None:
        flushed.append((dict(world.engine._entered), world.engine._logged))
        flush(*a, **k)

    world.engine._flush = spy  # type: ignore[method-assign]
    states = []
    for later in (
        lambda: world.engine.full_calculation(T0 + DAY),
        lambda: world.engine.evaluate(T0 + DAY, [*range(1, 61), 1001, 1002], "full"),
    ):
        _reset(world)
        world.engine.full_calculation(T0)
        # The child new; its parent missing some members and holding two it should not.
        world.engine.con.execute(
            f"DELETE FROM memberships WHERE audience_id = {child_id} OR (audience_id = {parent} AND mpid % 2 = 0)"
        ).fetchall()
        world.engine.con.execute(
            f"INSERT INTO memberships VALUES ({parent}, 1001, {T0}), ({parent}, 1002, {T0})"
        ).fetchall()
        world.engine.con.execute("DELETE FROM membership_changes").fetchall()
        later()
        states.append((_members(world), _log(world)))
        if len(states) == 1:
            assert flushed[-1][0] and flushed[-1][1], "entries and diffs are logged together"
    assert states[0] == states[1]
    assert any(r[3] == "remove" for r in states[0][1]) and any(r[1] == child_id for r in states[0][1])
