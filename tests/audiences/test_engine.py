"""The audience engine on a real store: tree semantics, real time, timers, full calculation, change log."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from sqlglot import parse_one

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.plan_sql import _columns
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

DAY = 86_400_000
T0 = 1_780_315_200_000  # 2026-06-01T12:00Z
WINDOWS = DedupeWindows(30 * DAY, 7 * DAY)


class World:
    def __init__(self, tmp: Path) -> None:
        self.store = DuckDBStore(tmp / "store")
        self.clock = ManualClock(T0)
        self.engine = AudienceEngine(self.store.connect(), self.clock, EngineSettings(90 * DAY, 90 * DAY))
        self.rng = random.Random(3)

    def send(self, *batches: dict[str, Any], input_id: int = 1) -> None:
        now = self.clock.now_ms()
        normalized, _ = normalize_request(list(batches), bulk=True, historical=False, received_at=now)
        self.store.apply(
            build_plan([IngestRequest(input_id, now, normalized)], self.store, WINDOWS, self.rng)
        )

    def changes(self) -> list[tuple[int, int, str]]:
        rows = (
            self.store.reader()
            .execute("SELECT audience_id, mpid, action FROM membership_changes ORDER BY seq")
            .fetchall()
        )
        return [(int(a), int(m), str(x)) for a, m, x in rows]


def attr(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"type": "user_attribute", "attribute": name, "op": op, "value": value}


def journey(*milestones: MilestoneRow, inputs: tuple[int, ...] = (1,)) -> JourneyRows:
    return JourneyRows(1, "j", inputs, milestones)


def ms(
    mid: int, audience: int, criteria: dict[str, Any] | None, parent: int | None = None, pos: int = 0
) -> MilestoneRow:
    return MilestoneRow(mid, 1, parent, pos, f"m{mid}", audience, criteria, criteria is None)


def _watch(ts: int) -> dict[str, Any]:
    data = {"event_name": "watch", "custom_event_type": "media", "timestamp_unixtime_ms": ts}
    return {"event_type": "custom_event", "data": data}


def _watched(times: int, days: int) -> dict[str, Any]:
    """At least `times` watch events in the last `days` days."""
    return {
        "type": "event",
        "event": {"event_type": "custom_event", "name": "watch"},
        "having": {"fn": "count", "op": "greater_or_equal", "value": times},
        "window": {"last": {"amount": days, "unit": "days"}},
    }


WATCHED_TWICE = _watched(2, 7)


def _tiers() -> JourneyRows:
    """Exclusive siblings by lifetime value, a remaining split, and a child under it."""
    return journey(
        ms(1, 101, attr("ltv", "greater_than", 1000), pos=0),
        ms(2, 102, attr("ltv", "greater_than", 100), pos=1),
        ms(3, 103, None, pos=2),
        ms(4, 104, attr("email_ok", "equals", True), parent=3),
    )


def test_exclusive_siblings_remaining_split_and_children(world: World) -> None:
    world.engine.configure([_tiers()], {})
    world.send(
        {"mpid": 1, "user_attributes": {"ltv": 5000}},
        {"mpid": 2, "user_attributes": {"ltv": 500}},
        {"mpid": 3, "user_attributes": {"ltv": 5, "email_ok": True}},
        {"mpid": 4},
    )
    world.engine.catch_up()
    assert [world.engine.members(a) for a in (101, 102, 103, 104)] == [[1], [2], [3, 4], [3]]
    # A later batch moves user 2 up a tier: one remove and one add, no flapping elsewhere.
    world.clock.advance(1000)
    world.send({"mpid": 2, "user_attributes": {"ltv": 2000}})
    world.engine.catch_up()
    assert world.engine.members(101) == [1, 2] and world.engine.members(102) == []
    assert world.changes()[-2:] == [(102, 2, "remove"), (101, 2, "add")]


def test_time_driven_exit_fires_from_a_timer(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, WATCHED_TWICE))], {})
    world.send({"mpid": 1, "events": [_watch(T0 - 6 * DAY), _watch(T0 - DAY)]})
    world.engine.catch_up()
    assert world.engine.members(101) == [1]
    world.clock.set(T0 + DAY - 1)
    world.engine.advance()
    assert world.engine.members(101) == [1]
    world.clock.set(T0 + DAY + 1)
    world.engine.advance()
    assert world.engine.members(101) == []
    assert world.changes() == [(101, 1, "add"), (101, 1, "remove")]


def test_full_calculation_agrees_and_logs_nothing_new(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, attr("plan", "equals", "paid")))], {})
    world.send(*({"mpid": i, "user_attributes": {"plan": "paid" if i % 2 else "free"}} for i in range(1, 21)))
    world.engine.catch_up()
    before = world.changes()
    assert world.engine.members(101) == list(range(1, 21, 2))
    world.engine.full_calculation()
    assert world.changes() == before
    assert world.engine.members(101) == list(range(1, 21, 2))


def test_root_requires_selected_inputs_and_profile_lifetime(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, {"all": []}), inputs=(2,))], {})
    world.send({"mpid": 1}, input_id=1)
    world.send({"mpid": 2}, input_id=2)
    world.engine.catch_up()
    assert world.engine.members(101) == [2]
    world.clock.set(T0 + 90 * DAY + 1)
    world.engine.advance()
    assert world.engine.members(101) == []


def test_realtime_step_evaluates_new_batches_and_due_timers_together(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, _watched(1, 1)))], {})
    world.send({"mpid": 1, "events": [_watch(T0 - 1000)]})
    assert world.engine.realtime().adds == 1
    assert world.engine.realtime().users == 0  # nothing new, nothing due
    # User 1's event leaves the window while user 2 sends one: one evaluation handles both.
    world.clock.set(T0 + DAY)
    world.send({"mpid": 2, "events": [_watch(T0 + DAY - 10)]})
    result = world.engine.realtime()
    assert (result.users, result.adds, result.removes) == (2, 1, 1)
    assert world.engine.members(101) == [2]
    rows = (
        world.store.reader()
        .execute("SELECT mpid, action, cause FROM membership_changes ORDER BY seq")
        .fetchall()
    )
    assert rows == [(1, "add", "ingest"), (1, "remove", "timer"), (2, "add", "ingest")]
    assert world.engine.realtime().users == 0  # the batch is marked evaluated


def test_realtime_step_takes_the_earliest_due_timers_first_and_leaves_the_rest(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, _watched(1, 1)))], {})
    # Users 3, 1, 2 leave the window in that order; a development batch is not evaluated.
    world.send(*({"mpid": m, "events": [_watch(T0 - off)]} for m, off in ((1, 2000), (2, 1000), (3, 3000))))
    world.send({"mpid": 4, "environment": "development", "events": [_watch(T0)]})
    assert world.engine.realtime().adds == 3
    world.clock.set(T0 + DAY)
    first = world.engine.realtime(max_timer_users=2)
    assert (first.users, first.removes) == (2, 2)
    assert world.engine.members(101) == [2]
    second = world.engine.realtime(max_timer_users=2)
    assert (second.users, second.removes) == (1, 1)
    assert world.engine.realtime().users == 0
    # The first step took users 3 and 1 (each step logs its changes by user), the second user 2.
    assert [r[1] for r in world.changes() if r[2] == "remove"] == [1, 3, 2]


def test_realtime_step_reports_its_log_rows_batch_receipts_and_due_instants(world: World) -> None:
    world.engine.configure([journey(ms(1, 101, _watched(1, 1)))], {})
    world.send({"mpid": 1, "events": [_watch(T0 - 2000)]}, {"mpid": 2, "events": [_watch(T0 - 1000)]})
    world.clock.set(T0 + 500)
    world.send({"mpid": 3, "events": [_watch(T0)]})
    entered = world.engine.realtime()
    seqs = world.store.reader().execute("SELECT seq FROM membership_changes ORDER BY seq").fetchall()
    assert entered.seqs == (seqs[0][0], seqs[-1][0]) and len(seqs) == 3
    assert (entered.at, entered.cause, entered.received, entered.due, entered.due_total) == (
        T0 + 500,
        "ingest",
        [(T0, 2), (T0 + 500, 1)],
        [],
        0,
    )
    assert world.engine.realtime().seqs is None  # nothing new, nothing due
    # Users 1 and 2 leave the window 1 s apart (user 3 later); the step takes one of the two due.
    world.clock.set(T0 + DAY - 500)
    left = world.engine.realtime(max_timer_users=1)
    assert (left.received, left.due, left.due_total) == ([], [T0 - 2000 + DAY], 2)
    assert left.seqs == (seqs[-1][0] + 1, seqs[-1][0] + 1) and left.cause == "timer"
    # A full calculation is noted too (the recovery after a start runs one).
    world.clock.set(T0 + DAY + 1000)
    full = world.engine.full_calculation()
    assert (full.at, full.cause, full.received, full.due) == (T0 + DAY + 1000, "full", [], [])


def test_independent_groups_share_a_statement_and_log_in_step_order(world: World) -> None:
    # Journey 1's top group and journey 2's group are independent (one statement); journey 1's
    # child group follows its parent. The change log still follows the plan's step order, not
    # audience ids: journey 2's audience 50 comes after journey 1's 101.
    j1 = journey(ms(1, 101, {"all": []}), ms(2, 102, attr("plan", "equals", "paid"), parent=1))
    j2 = JourneyRows(2, "k", (1,), (MilestoneRow(3, 2, None, 0, "m3", 50, {"all": []}, False),))
    world.engine.configure([j1, j2], {})
    batches = world.engine._compiled(world.engine._plan).batches
    assert [sorted(a for s in b for a in s.writes) for b in batches] == [[50, 101], [102]]
    world.send({"mpid": 1, "user_attributes": {"plan": "paid"}}, {"mpid": 2})
    world.engine.catch_up()
    assert world.changes() == [
        (101, 1, "add"),
        (101, 2, "add"),
        (50, 1, "add"),
        (50, 2, "add"),
        (102, 1, "add"),
    ]
    # A user who no longer qualifies leaves the child and stays in the parent.
    world.clock.advance(1000)
    world.send({"mpid": 1, "user_attributes": {"plan": "free"}})
    world.engine.catch_up()
    assert world.changes()[-1] == (102, 1, "remove")
    assert [world.engine.members(a) for a in (101, 102, 50)] == [[1, 2], [], [1, 2]]


def test_change_log_numbers_each_evaluation_by_step_action_audience_and_user(world: World) -> None:
    # Many users moving between tiers (removes and adds in several audiences of two steps), once
    # scoped and once in a full calculation: seq follows (step, removes first, audience, user).
    world.engine.configure([_tiers()], {})
    rng = random.Random(7)

    def send_all() -> None:
        world.send(
            *(
                {
                    "mpid": i,
                    "user_attributes": {"ltv": rng.choice([5, 500, 5000]), "email_ok": rng.random() < 0.5},
                }
                for i in range(1, 101)
            )
        )

    send_all()
    world.engine.catch_up()
    world.clock.advance(1000)
    send_all()
    world.engine.full_calculation()
    step = {101: 0, 102: 0, 103: 0, 104: 1}
    rows = (
        world.store.reader()
        .execute("SELECT seq, changed_at, audience_id, mpid, action FROM membership_changes ORDER BY seq")
        .fetchall()
    )
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    for at in (T0, T0 + 1000):
        logged = [(a, m, x) for _, t, a, m, x in rows if t == at]
        assert logged == sorted(logged, key=lambda r: (step[r[0]], r[2] == "add", r[0], r[1]))
        assert {x for _, _, x in logged} == ({"add"} if at == T0 else {"add", "remove"})
        assert len({a for a, _, _ in logged}) == 4


def test_a_one_audience_group_agrees_with_the_general_sibling_form(world: World) -> None:
    # Journey 1's groups hold one audience each (filtered on the criterion itself); journey 2 asks
    # the same with a remaining sibling (the CASE form). Same members, real time and full.
    paid_or_rich = {"any": [attr("plan", "equals", "paid"), attr("ltv", "greater_than", 100)]}
    j1 = journey(ms(1, 101, paid_or_rich), ms(2, 102, WATCHED_TWICE, parent=1))

    def row(mid: int, audience: int, crit: Any, parent: int | None = None, pos: int = 0) -> MilestoneRow:
        return MilestoneRow(mid, 2, parent, pos, f"k{mid}", audience, crit, crit is None)

    j2 = JourneyRows(
        2,
        "k",
        (1,),
        (
            row(3, 201, paid_or_rich),
            row(4, 203, None, pos=1),
            row(5, 202, WATCHED_TWICE, parent=3),
            row(6, 204, None, parent=3, pos=1),
        ),
    )
    world.engine.configure([j1, j2], {})
    one = [
        s.sql
        for b in world.engine._compiled(world.engine._plan).batches
        for s in b
        if s.writes in ((101,), (102,))
    ]
    assert len(one) == 2 and all((sql or "").endswith(") AS q WHERE c0") for sql in one)
    rng = random.Random(11)
    for _ in range(3):
        world.send(
            *(
                {
                    "mpid": i,
                    "user_attributes": {"plan": rng.choice(["paid", "free"]), "ltv": rng.choice([5, 500])},
                    "events": [
                        _watch(world.clock.now_ms() - rng.randrange(9 * DAY)) for _ in range(rng.randrange(4))
                    ],
                }
                for i in range(1, 61)
            )
        )
        world.engine.catch_up()
        for full in (False, True):
            if full:
                world.engine.full_calculation()
            members = {a: world.engine.members(a) for a in (101, 102, 201, 202, 203)}
            assert members[101] == members[201] and members[102] == members[202]
            assert 0 < len(members[102]) < len(members[101]) < 60
            assert sorted(members[101] + members[203]) == list(range(1, 61))
        world.clock.advance(2 * DAY)


def _timers(world: World) -> list[tuple[int, int]]:
    rows = world.engine.con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall()
    return [(int(m), int(d)) for m, d in rows]


def test_full_calculation_in_parts_leaves_what_one_full_calculation_leaves(world: World) -> None:
    tree = journey(
        ms(1, 101, WATCHED_TWICE), ms(2, 102, attr("plan", "equals", "paid"), pos=1), ms(3, 103, None, pos=2)
    )
    world.send(
        *(
            {
                "mpid": i,
                "user_attributes": {"plan": "paid" if i % 3 == 0 else "free"},
                "events": [_watch(T0 - (i % 9) * DAY), _watch(T0 - DAY)],
            }
            for i in range(1, 23)
        )
    )
    world.engine.catch_up()  # nothing maintained yet: only the read position moves
    world.engine.configure([tree], {})
    after: int | None = None
    parts = 0
    upto, users = world.engine.last_user()
    assert (upto, users) == (22, 22)
    while True:
        _, last = world.engine.calculate_part(after, 4, upto)
        if last is None:
            break
        assert after is None or last > after
        after, parts = last, parts + 1
    assert parts == 6  # 22 users, 4 at a time
    members = {a: world.engine.members(a) for a in (101, 102, 103)}
    assert members[101] == [i for i in range(1, 23) if i % 9 < 7]
    timers = _timers(world)
    assert timers  # windows slide: every user has a next boundary
    check = world.engine.full_calculation()
    assert (check.adds, check.removes) == (0, 0)
    assert {a: world.engine.members(a) for a in (101, 102, 103)} == members
    assert _timers(world) == timers
    # Each member was added once, by the calculation.
    assert sorted(world.changes()) == sorted((a, m, "add") for a, ms_ in members.items() for m in ms_)


def test_real_time_between_parts_of_a_calculation_logs_each_transition_once(world: World) -> None:
    world.send(*({"mpid": i, "user_attributes": {"plan": "free"}} for i in range(1, 13)))
    world.engine.catch_up()
    world.engine.configure([journey(ms(1, 101, attr("plan", "equals", "paid")))], {})
    upto, _ = world.engine.last_user()
    _, after = world.engine.calculate_part(None, 5, upto)
    assert after == 5
    # Users on either side of the calculation's position change between its parts.
    world.clock.advance(1000)
    world.send(
        {"mpid": 2, "user_attributes": {"plan": "paid"}}, {"mpid": 9, "user_attributes": {"plan": "paid"}}
    )
    world.engine.realtime()
    assert world.engine.members(101) == [2, 9]
    world.clock.advance(1000)
    # A user who arrives meanwhile, past the calculation's end, is real time's alone.
    world.send(
        {"mpid": 9, "user_attributes": {"plan": "free"}},
        {"mpid": 11, "user_attributes": {"plan": "paid"}},
        {"mpid": 40, "user_attributes": {"plan": "paid"}},
    )
    world.engine.realtime()
    covered = []
    while after is not None:
        _, after = world.engine.calculate_part(after, 5, upto)
        covered.append(after)
    assert covered == [10, 12, None]
    assert world.engine.members(101) == [2, 11, 40]
    assert world.changes() == [
        (101, 2, "add"),
        (101, 9, "add"),
        (101, 9, "remove"),
        (101, 11, "add"),
        (101, 40, "add"),
    ]
    check = world.engine.full_calculation()
    assert (check.adds, check.removes) == (0, 0)


def test_scoped_copies_keep_the_columns_the_queries_name() -> None:
    counted = parse_one("SELECT e.mpid, count(*) FROM events AS e WHERE e.ts > 1 GROUP BY e.mpid")
    assert _columns([counted, parse_one("SELECT u.mpid FROM users AS u WHERE u.attributes IS NULL")]) == {
        "mpid",
        "ts",
        "attributes",
    }
    # A query reading whole rows needs every column.
    assert _columns([counted, parse_one("SELECT e.* FROM events AS e")]) is None
    assert _columns([parse_one("SELECT * FROM events")]) is None


def test_scoped_evaluation_of_scattered_users_in_a_sealed_segment_agrees_with_a_full_calculation(
    world: World,
) -> None:
    # User i has i % 3 watches: those with two are members. Every event is sealed into a segment.
    users = range(1, 1501)
    for first in range(1, 1501, 100):
        world.send(*({"mpid": i, "events": [_watch(T0 - DAY)] * (i % 3)} for i in range(first, first + 100)))
    assert world.store.seal(min_rows=1) > 0
    world.engine.catch_up()
    world.engine.configure([journey(ms(1, 101, WATCHED_TWICE))], {})
    world.engine.full_calculation()
    expected = [i for i in users if i % 3 == 2]
    assert world.engine.members(101) == expected
    # A second watch for scattered users with one: the scoped evaluation adds exactly them.
    touched = [1, 499, 1000, 1498]
    assert all(i % 3 == 1 for i in touched)
    world.send(*({"mpid": i, "events": [_watch(T0)]} for i in touched))
    result = world.engine.catch_up()
    assert (result.adds, result.removes) == (len(touched), 0)
    assert world.engine.members(101) == sorted([*expected, *touched])
    check = world.engine.full_calculation()
    assert (check.adds, check.removes) == (0, 0)


def test_scoped_removals_delete_exactly_the_stored_rows_of_the_users_who_left(world: World) -> None:
    # Each user is a member of "paid" (101) or of the remaining split (102). In rounds, scattered
    # users move from 101 to 102, with a checkpoint after each, so the stored rows each scoped
    # evaluation deletes by row id lie scattered through a table that has been rewritten.
    paid = attr("plan", "equals", "paid")
    for first in range(1, 1201, 100):
        world.send(*({"mpid": i, "user_attributes": {"plan": "paid"}} for i in range(first, first + 100)))
    world.engine.catch_up()
    world.engine.configure([journey(ms(1, 101, paid), ms(2, 102, None, pos=1))], {})
    world.engine.full_calculation()
    everyone = set(range(1, 1201))
    left: set[int] = set()
    for round_ in range(3):
        leaving = sorted(world.rng.sample(sorted(everyone - left), 40))
        world.send(*({"mpid": i, "user_attributes": {"plan": "free"}} for i in leaving))
        result = world.engine.catch_up()
        assert (result.adds, result.removes) == (40, 40)  # from 101 to the remaining split 102
        left |= set(leaving)
        assert world.engine.members(101) == sorted(everyone - left), round_
        assert world.engine.members(102) == sorted(left), round_
        world.engine.con.execute("CHECKPOINT").fetchall()
    rows = (
        world.store.reader()
        .execute("SELECT count(*), count(DISTINCT (audience_id, mpid)) FROM memberships")
        .fetchall()
    )
    assert rows == [(1200, 1200)]
    check = world.engine.full_calculation()
    assert (check.adds, check.removes) == (0, 0)


@pytest.mark.parametrize("full", [False, True])
def test_a_date_attribute_long_past_leaves_the_other_boundaries_their_timer(world: World, full: bool) -> None:
    # signup + 10 days is long past: it bounds nothing, and must not hide the watch leaving its window.
    recent = _watched(1, 5)
    signed_up = attr("signup", "within_last", {"amount": 10, "unit": "days"})
    world.engine.configure([journey(ms(1, 101, {"any": [recent, signed_up]}))], {})
    world.send({"mpid": 1, "events": [_watch(T0 - DAY)], "user_attributes": {"signup": T0 - 20 * DAY}})
    if full:
        world.engine.full_calculation()
    else:
        world.engine.catch_up()
    assert world.engine.members(101) == [1]
    assert _timers(world) == [(1, T0 + 4 * DAY)]
    world.clock.advance(4 * DAY + 1)
    world.engine.advance()
    assert world.engine.members(101) == []
