"""Which durations each time source gets: only those of the leaves that read it."""

from __future__ import annotations

from typing import Any

from milepost.audiences.boundaries import MAX_KINDS, boundaries
from milepost.criteria import parse_criteria

DAY = 86_400_000
LOOKBACK, LIFETIME = 30 * DAY, 90 * DAY


def days(n: int) -> dict[str, Any]:
    return {"amount": n, "unit": "days"}


def test_each_source_gets_the_durations_of_its_leaves() -> None:
    crit = parse_criteria(
        {
            "all": [
                {
                    "type": "event",
                    "event": {"event_type": "custom_event", "name": "watch"},
                    "window": {"last": days(7)},
                },
                {"type": "last_seen", "op": "within_last", "value": days(3)},
                {"type": "parent_entry", "op": "more_than_ago", "value": days(2)},
            ]
        }
    )
    b = boundaries([crit], [], LOOKBACK, LIFETIME)
    assert b.event_durations_ms == {0, 7 * DAY}  # the window replaces the lookback
    assert b.seen_durations_ms == {0, 3 * DAY, LIFETIME}
    assert b.entry_durations_ms == {2 * DAY}
    assert b.durations_ms == {0, 2 * DAY, 3 * DAY, 7 * DAY, LOOKBACK, LIFETIME}


def test_profile_only_criteria_need_no_event_or_entry_boundaries() -> None:
    crit = parse_criteria(
        {
            "all": [
                {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "paid"},
                {"type": "consent", "regulation": "gdpr", "purpose": "marketing", "state": "consented"},
            ]
        }
    )
    b = boundaries([crit], [], LOOKBACK, LIFETIME)
    assert b.event_durations_ms == frozenset() and b.entry_durations_ms == frozenset()
    assert b.seen_durations_ms == {0, LIFETIME}


def test_an_event_leaf_without_a_window_still_reads_events() -> None:
    crit = parse_criteria({"type": "event", "event": {"event_type": "custom_event", "name": "watch"}})
    assert boundaries([crit], [], LOOKBACK, LIFETIME).event_durations_ms == {0, LOOKBACK}


def test_the_lookback_bounds_only_event_leaves_without_a_window() -> None:
    windowed = {
        "type": "event",
        "event": {"event_type": "custom_event", "name": "a"},
        "window": {"last": days(3)},
    }
    sequence = {
        "type": "sequence",
        "first": {"event_type": "custom_event", "name": "a"},
        "then": {"event_type": "custom_event", "name": "b"},
        "within": days(1),
        "completed": False,
    }
    assert boundaries([parse_criteria(windowed)], [], LOOKBACK, LIFETIME).event_durations_ms == {0, 3 * DAY}
    both = parse_criteria({"all": [windowed, sequence]})
    assert boundaries([both], [], LOOKBACK, LIFETIME).event_durations_ms == {0, DAY, 3 * DAY, LOOKBACK}


def test_only_the_kinds_of_event_a_leaf_reads_have_boundaries() -> None:
    crit = parse_criteria(
        {
            "any": [
                {
                    "type": "event",
                    "event": {"event_type": "custom_event", "name": "watch"},
                    "where": [{"attribute": "duration", "op": "greater_than", "value": 10}],
                },
                {
                    "type": "sequence",
                    "first": {"event_type": "custom_event", "name": "Watch"},
                    "then": {"event_type": "install"},
                    "within": days(1),
                },
            ]
        }
    )
    kinds = boundaries([crit], [], LOOKBACK, LIFETIME).event_kinds
    assert kinds is not None
    # Conditions on attributes are dropped (a wider set of events, here the same as the sequence's
    # first step, names compared lower-cased); the sequence's steps both count.
    assert [(k.event_type, k.name_lc, k.action_lc, k.flag, k.where) for k in kinds] == [
        (None, None, None, "is_install", ()),
        ("custom_event", "watch", None, None, ()),
    ]


def test_a_calculated_attribute_leaf_keeps_every_event() -> None:
    crit = parse_criteria(
        {
            "all": [
                {"type": "event", "event": {"event_type": "custom_event", "name": "watch"}},
                {"type": "calculated_attribute", "name": "spend", "op": "greater_than", "value": 1},
            ]
        }
    )
    assert boundaries([crit], [], LOOKBACK, LIFETIME).event_kinds is None


def test_more_kinds_than_are_worth_testing_keep_every_event() -> None:
    leaves = [
        {"type": "event", "event": {"event_type": "custom_event", "name": name}}
        for name in ("a", "b", "c")[: MAX_KINDS + 1]
    ]
    assert len(leaves) == MAX_KINDS + 1
    assert boundaries([parse_criteria({"any": leaves})], [], LOOKBACK, LIFETIME).event_kinds is None
    kept = boundaries([parse_criteria({"any": leaves[:MAX_KINDS]})], [], LOOKBACK, LIFETIME).event_kinds
    assert kept is not None and len(kept) == MAX_KINDS
