"""Journey roots: stored only where a child reads the root's entry time, evaluated inline elsewhere."""

from __future__ import annotations

from typing import Any

from tests.audiences.test_engine import DAY, T0, World, attr, journey, ms

from milepost.audiences.tree import root_audience_id


def _root_rows(world: World) -> int:
    return int(
        world.engine.con.execute("SELECT count(*) FROM memberships WHERE audience_id < 0").fetchall()[0][0]
    )


def _wait(days: int) -> dict[str, Any]:
    return {"type": "parent_entry", "op": "more_than_ago", "value": {"amount": days, "unit": "days"}}


def test_a_root_no_child_waits_on_is_not_stored_and_membership_follows_it(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, attr("plan", "equals", "paid")), ms(2, 102, None, pos=1))], {})
    world.send(*({"mpid": i, "user_attributes": {"plan": "paid" if i % 2 else "free"}} for i in range(1, 7)))
    world.engine.catch_up()
    assert _root_rows(world) == 0
    assert world.engine.members(101) == [1, 3, 5]
    assert world.engine.members(102) == [2, 4, 6]
    before = world.changes()
    world.engine.full_calculation()
    assert world.changes() == before and _root_rows(world) == 0
    # The profile lifetime ends: every member leaves through the inline root, each change once.
    world.clock.set(T0 + 90 * DAY + 1)
    world.engine.advance()
    assert world.engine.members(101) == [] and world.engine.members(102) == []
    removed = [c for c in world.changes() if c[2] == "remove"]
    assert sorted(removed) == sorted((101 if i % 2 else 102, i, "remove") for i in range(1, 7))


def test_a_root_a_child_waits_on_is_stored_with_its_entry_times(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, _wait(2)))], {})
    world.send({"mpid": 1})
    world.engine.catch_up()
    assert _root_rows(world) == 1
    assert world.engine.members(101) == []
    world.clock.set(T0 + 2 * DAY + 1)
    world.engine.advance()
    assert world.engine.members(101) == [1]


def test_a_store_holding_root_rows_drops_those_no_longer_needed_on_configure(world: World) -> None:
    tree = journey(ms(1, 101, attr("plan", "equals", "paid")))
    world.engine.configure([tree], {})
    world.send({"mpid": 1, "user_attributes": {"plan": "paid"}}, {"mpid": 2})
    world.engine.catch_up()
    # As an earlier version left it: every root member stored.
    world.engine.con.execute(
        "INSERT INTO memberships VALUES (?, 1, ?), (?, 2, ?)",
        [root_audience_id(1), T0, root_audience_id(1), T0],
    ).fetchall()
    before = world.changes()
    world.engine.configure([tree], {})
    assert _root_rows(world) == 0
    world.engine.full_calculation()
    assert world.engine.members(101) == [1]
    assert world.changes() == before


def test_only_root_members_carry_timers(world: World) -> None:
    watch = {
        "type": "event",
        "event": {"event_type": "custom_event", "name": "watch"},
        "window": {"last": {"amount": 7, "unit": "days"}},
    }
    world.engine.configure([journey(ms(1, 101, watch), inputs=(2,))], {})
    data = {"event_name": "watch", "custom_event_type": "media", "timestamp_unixtime_ms": T0 - DAY}
    event = {"event_type": "custom_event", "data": data}
    world.send({"mpid": 1, "events": [event]}, input_id=1)  # not through the journey's input
    world.send({"mpid": 2, "events": [event]}, input_id=2)
    world.engine.catch_up()
    assert world.engine.members(101) == [2]
    timers = world.engine.con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall()
    assert timers == [(2, T0 + 6 * DAY)]  # the event leaves the 7-day window


def test_the_end_of_the_lifetime_is_a_timer_for_members_only(world: World) -> None:
    """Without a first/last-seen leaf, leaving the root at the end of the lifetime can only end a
    membership: a root member in no audience gets no timer from it, on both paths. With such a
    leaf, every root member's seen times count."""
    world.engine.configure([journey(ms(1, 101, attr("plan", "equals", "paid")))], {})
    world.send(
        {"mpid": 1, "user_attributes": {"plan": "paid"}}, {"mpid": 2, "user_attributes": {"plan": "free"}}
    )
    world.engine.catch_up()
    assert world.engine.members(101) == [1]
    timers = world.engine.con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall()
    assert timers == [(1, T0 + 90 * DAY)]
    world.engine.full_calculation()
    assert world.engine.con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall() == timers
    seen = {"type": "last_seen", "op": "within_last", "value": {"amount": 3, "unit": "days"}}
    world.engine.configure([journey(ms(1, 101, {"all": [attr("plan", "equals", "paid"), seen]}))], {})
    world.engine.full_calculation()
    due = dict(world.engine.con.execute("SELECT mpid, due_at FROM timers").fetchall())
    assert due == {1: T0 + 3 * DAY, 2: T0 + 3 * DAY}


def test_without_event_leaves_a_rolling_attribute_still_times_every_root_member(world: World) -> None:
    """A date attribute's boundary counts for members and non-members alike; the end of the
    lifetime only for members. The scoped and the full path leave the same timers."""
    ago = attr("signup", "more_than_ago", {"amount": 5, "unit": "days"})
    world.engine.configure([journey(ms(1, 101, ago))], {})
    world.send(
        {"mpid": 1, "user_attributes": {"signup": T0 - 10 * DAY}},
        {"mpid": 2, "user_attributes": {"signup": T0 - 2 * DAY}},
    )
    world.engine.catch_up()
    assert world.engine.members(101) == [1]
    timers = world.engine.con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall()
    assert timers == [(1, T0 + 90 * DAY), (2, T0 + 3 * DAY)]
    world.engine.con.execute("DELETE FROM timers").fetchall()
    world.engine.full_calculation()
    assert world.engine.con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall() == timers


def test_without_seen_leaves_the_seen_times_give_the_end_of_the_lifetime_only(world: World) -> None:
    """First seen plus the lifetime (earlier than last seen plus it) flips nothing: a root member
    with no other boundary is timed at the end of their lifetime, on both paths."""
    watch = {
        "type": "event",
        "event": {"event_type": "custom_event", "name": "watch"},
        "window": {"last": {"amount": 7, "unit": "days"}},
    }
    world.engine.configure([journey(ms(1, 101, watch))], {})
    world.send({"mpid": 1})
    world.clock.set(T0 + 5 * DAY)
    world.send({"mpid": 1})
    world.engine.catch_up()
    timers = world.engine.con.execute("SELECT mpid, due_at FROM timers").fetchall()
    assert timers == [(1, T0 + 95 * DAY)]
    world.engine.con.execute("DELETE FROM timers").fetchall()
    world.engine.full_calculation()
    assert world.engine.con.execute("SELECT mpid, due_at FROM timers").fetchall() == timers
