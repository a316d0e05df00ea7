"""A full calculation takes its users' event boundaries from the scan of its root's children
(`Step.bounds`) instead of a second pass over the events: it must leave exactly the timers,
memberships and changes that evaluating every user through the scoped path (which scans) leaves."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.audiences.test_engine import DAY, T0, World, attr, journey, ms

from milepost.audiences.tree import JourneyRows


def ev(name: str, n: int, window: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    leaf: dict[str, Any] = {
        "type": "event",
        "event": {"event_type": "custom_event", "name": name},
        "having": {"fn": "count", "op": "greater_or_equal", "value": n},
        **extra,
    }
    if window is not None:
        leaf["window"] = window
    return leaf


def last(days: int) -> dict[str, Any]:
    return {"last": {"amount": days, "unit": "days"}}


DAYS_3 = {"amount": 3, "unit": "days"}
DAYS_10 = {"amount": 10, "unit": "days"}
FEWER = {"not": ev("watch", 2, last(3))}  # true as events leave the window
JOURNEYS: dict[str, JourneyRows] = {
    "one leaf": journey(ms(1, 101, ev("watch", 2, last(7)))),
    "siblings, rest and a child": journey(
        ms(1, 101, ev("watch", 3, last(30)), pos=0),
        ms(2, 102, ev("buy", 1, None), pos=1),  # within the lookback
        ms(3, 103, None, pos=2),
        ms(4, 104, ev("open", 1, last(7)), parent=1),
    ),
    "between ago, a negation and an attribute": journey(
        ms(1, 101, ev("watch", 1, {"between_ago": {"from": 2, "to": 10, "unit": "days"}}), pos=0),
        ms(2, 102, {"all": [FEWER, attr("plan", "equals", "paid")]}, pos=1),
    ),
    "a sequence beside an event leaf": journey(
        ms(1, 101, ev("watch", 1, last(5)), pos=0),
        ms(
            2,
            102,
            {
                "type": "sequence",
                "first": {"event_type": "custom_event", "name": "buy"},
                "then": {"event_type": "custom_event", "name": "open"},
                "within": {"amount": 1, "unit": "days"},
                "completed": False,
            },
            pos=1,
        ),
    ),
    "a rolling date attribute and last seen": journey(
        ms(1, 101, {"all": [ev("watch", 1, last(5)), attr("signup", "within_last", DAYS_10)]}, pos=0),
        ms(2, 102, {"type": "last_seen", "op": "within_last", "value": DAYS_3}, pos=1),
    ),
    # A child of the root reading its entry time: the root is stored, not read inline.
    "a stored root": journey(
        ms(
            1,
            101,
            {
                "all": [
                    ev("watch", 1, last(7)),
                    {"type": "parent_entry", "op": "more_than_ago", "value": DAYS_3},
                ]
            },
        ),
    ),
}


def send_users(
    world: World, rng: random.Random, max_events: int = 6, ages: tuple[int, int] = (-2 * DAY, 40 * DAY)
) -> None:
    """60 users with up to `max_events` events each, aged within `ages` before now (by default mostly
    within the windows, some older than any, a few dated after now)."""
    batches = []
    for mpid in range(1, 61):
        events = []
        for _ in range(rng.randint(0, max_events)):
            ts = T0 - rng.randint(*ages)
            name = rng.choice(["watch", "buy", "open", "other"])
            data = {"event_name": name, "custom_event_type": "other", "timestamp_unixtime_ms": ts}
            events.append({"event_type": "custom_event", "data": data})
        attributes = {"plan": rng.choice(["paid", "free"]), "signup": T0 - rng.randint(-DAY, 20 * DAY)}
        batches.append({"mpid": mpid, "events": events, "user_attributes": attributes})
    world.send(*batches)


def _state(world: World) -> tuple[list[Any], list[Any], list[Any]]:
    con = world.engine.con
    return (
        con.execute("SELECT mpid, due_at FROM timers ORDER BY ALL").fetchall(),
        con.execute("SELECT audience_id, mpid, entered_at FROM memberships ORDER BY ALL").fetchall(),
        con.execute("SELECT audience_id, mpid, action FROM membership_changes ORDER BY ALL").fetchall(),
    )


def _reset(world: World) -> None:
    for table in ("memberships", "membership_changes", "timers"):
        world.engine.con.execute(f"DELETE FROM {table}").fetchall()


@pytest.mark.parametrize("name", list(JOURNEYS))
def test_full_calculation_timers_agree_with_evaluating_every_user(world: World, name: str) -> None:
    world.engine.configure([JOURNEYS[name]], {})
    send_users(world, random.Random(name))
    fused = world.engine._compiled(world.engine._plan, fused=True)
    assert any(s.bounds for batch in fused.batches for s in batch)  # the path under test is taken
    users = list(range(1, 61))
    for now in (T0, T0 + 2 * DAY + 1, T0 + 9 * DAY):
        _reset(world)
        world.engine.full_calculation(now)
        full = _state(world)
        _reset(world)
        world.engine.evaluate(now, users, "full")
        assert _state(world) == full
        assert full[0], "some users have timers"


def test_a_plan_of_two_journeys_scans_for_its_timers(world: World) -> None:
    other = JourneyRows(2, "k", (1,), JOURNEYS["one leaf"].milestones)
    world.engine.configure([JOURNEYS["one leaf"], other], {})
    fused = world.engine._compiled(world.engine._plan, fused=True)
    assert not any(s.bounds for batch in fused.batches for s in batch)


def test_the_users_own_boundary_rides_with_the_fused_scan_when_the_root_is_read_inline(world: World) -> None:
    for name, own in (
        ("one leaf", True),
        ("a rolling date attribute and last seen", True),
        ("a stored root", False),
    ):
        world.engine.configure([JOURNEYS[name]], {})
        fused = world.engine._compiled(world.engine._plan, fused=True)
        assert [s.bounds_own for batch in fused.batches for s in batch if s.bounds] == [own], name


def test_an_event_no_leaf_reads_sets_no_timer(world: World) -> None:
    """A user whose only event is of a kind no leaf reads gets no timer from its time, on both paths;
    the same event of a kind a leaf reads does."""
    world.engine.configure([JOURNEYS["one leaf"]], {})
    ts = T0 - DAY
    for mpid, name in ((1, "other"), (2, "watch")):
        data = {"event_name": name, "custom_event_type": "other", "timestamp_unixtime_ms": ts}
        world.send({"mpid": mpid, "events": [{"event_type": "custom_event", "data": data}]})
    for evaluate in (
        lambda: world.engine.full_calculation(T0),
        lambda: world.engine.evaluate(T0, [1, 2], "full"),
    ):
        _reset(world)
        evaluate()
        due = dict(world.engine.con.execute("SELECT mpid, due_at FROM timers").fetchall())
        assert due[2] == ts + 7 * DAY  # the watch event leaves the 7-day window
        assert due[1] > ts + 7 * DAY  # the other event's leaving it flips nothing
