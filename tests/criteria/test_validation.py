"""Rejections point at the offending part; accepted documents round-trip through to_json."""

from __future__ import annotations

from typing import Any

import pytest

from milepost.criteria import (
    parse_calculated_attribute,
    parse_criteria,
    references,
    resolve_audiences,
    to_json,
)
from milepost.errors import InvalidCriteria

EVENT = {"event_type": "custom_event", "name": "watch"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"any": [{"type": "foo"}]}, "any[0].type: unknown leaf type 'foo'"),
        (
            {"type": "user_attribute", "attribute": "a", "op": "bogus", "value": 1},
            "op: unknown operator 'bogus'",
        ),
        (
            {
                "all": [
                    {"all": []},
                    {
                        "type": "event",
                        "event": EVENT,
                        "where": [{"attribute": "x", "op": "greater_than", "value": True}],
                    },
                ]
            },
            "all[1].where[0].op: 'greater_than' does not apply to a boolean value",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "contains", "value": 3},
            "op: 'contains' does not apply to a number value",
        ),
        (
            {"type": "identity", "identity": "email", "op": "includes", "value": "x"},
            "op: 'includes' does not apply to an identity",
        ),
        (
            {"type": "identity", "identity": "email", "op": "greater_than", "value": 1},
            "op: 'greater_than' does not apply to an identity",
        ),
        (
            {"type": "prediction", "prediction": "churn", "measure": "score", "op": "equals", "value": "x"},
            "op: 'equals' does not apply to a string value",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "matches", "value": "(?=x)"},
            "value: not a valid RE2 regular expression",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "matches", "value": "(a)\\1"},
            "value: not a valid RE2 regular expression",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "matches", "value": "[a"},
            "value: not a valid RE2 regular expression",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "between", "min": 1},
            "max: 'between' needs 'max'",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "between", "min": 5, "max": 1},
            "min: min (5) is greater than max (1)",
        ),
        (
            {"type": "user_attribute", "attribute": "a", "op": "before", "value": "2026-13-01"},
            "value: invalid date '2026-13-01'",
        ),
        (
            {
                "type": "user_attribute",
                "attribute": "a",
                "op": "between_dates",
                "values": ["2026-05-02", "2026-05-01"],
            },
            "values: the first date is after the second",
        ),
        (
            {
                "type": "event",
                "event": EVENT,
                "window": {"between_ago": {"from": 3, "to": 3, "unit": "days"}},
            },
            "window.between_ago: 'from' (3) must be less than 'to' (3)",
        ),
        (
            {"type": "event", "event": EVENT, "window": {"last": {"amount": 7, "unit": "months"}}},
            "window.last.unit: unknown unit 'months'",
        ),
        (
            {"type": "event", "event": EVENT, "window": {"on_date": "yesterday"}},
            "window.on_date: invalid date 'yesterday'",
        ),
        (
            {"type": "event", "event": EVENT, "having": {"fn": "sum", "op": "greater_than", "value": 1}},
            "having.attribute: 'sum' needs an attribute",
        ),
        (
            {"type": "event", "event": EVENT, "having": {"fn": "count", "op": "greater_than", "value": "x"}},
            "having.op: 'greater_than' does not apply to a string value",
        ),
        ({"type": "event", "event": {"event_type": "nope"}}, "event.event_type: unknown event type 'nope'"),
        (
            {"type": "event", "event": {"event_type": "session_start", "action": "purchase"}},
            "event.action: not available on 'session_start' events",
        ),
        (
            {
                "type": "event",
                "event": EVENT,
                "where": [{"attribute": "total_amount", "op": "contains", "value": "1"}],
            },
            "where[0].op: 'contains' does not apply to the number attribute 'total_amount'",
        ),
        (
            {"type": "consent", "regulation": "gdpr", "purpose": "ads", "state": "maybe"},
            "state: unknown consent state 'maybe'",
        ),
        (
            {"type": "parent_entry", "op": "before", "value": {"amount": 1, "unit": "days"}},
            "op: 'before' does not apply to parent_entry",
        ),
        ({"type": "audience", "member": True}, "needs 'audience_id'"),
        (
            {"type": "user_attribute", "attribute": "a", "op": "exists", "value": 1},
            "value: not used by 'exists'",
        ),
        (
            {"type": "first_seen", "op": "contains", "value": "x"},
            "op: 'contains' does not apply to first_seen (a date)",
        ),
        ({"all": [], "any": []}, "any: unknown field"),
        ([1], "expected a criteria object"),
    ],
)
def test_rejections_name_the_path(doc: Any, message: str) -> None:
    with pytest.raises(InvalidCriteria) as info:
        parse_criteria(doc)
    assert info.value.message.startswith(message), info.value.message


def test_round_trip_and_references() -> None:
    doc = {
        "all": [
            {"type": "audience", "journey": "vip", "milestone": "vip", "member": True},
            {
                "type": "audience",
                "audience_id": 7,
                "member": False,
                "member_for": {"amount": 2, "unit": "days"},
            },
            {"not": {"type": "event", "event": EVENT, "window": {"since_parent_entry": True}}},
            {"type": "calculated_attribute", "name": "ltv", "op": "greater_than", "value": 100},
            {
                "type": "sequence",
                "first": {"event_type": "install"},
                "then": {**EVENT, "where": [{"attribute": "k", "op": "exists"}]},
                "within": {"amount": 1, "unit": "days"},
            },
            {
                "type": "event",
                "event": EVENT,
                "window": {"between_ago": {"from": 1, "to": 3, "unit": "weeks"}},
            },
            {"type": "event", "event": EVENT, "window": {"between_dates": ["2026-05-01", "2026-05-31"]}},
        ]
    }
    crit = parse_criteria(doc)
    assert parse_criteria(to_json(crit)) == crit
    refs = references(crit)
    assert refs.audience_ids == {7}
    assert refs.audience_names == {("vip", "vip")}
    assert refs.calculated_attributes == {"ltv"}
    assert refs.uses_parent_entry
    resolved = resolve_audiences(crit, lambda journey, milestone: 3)
    assert references(resolved).audience_ids == {3, 7}
    assert not references(parse_criteria({"all": []})).uses_parent_entry


def test_customerid_alias_and_calculated_definition() -> None:
    crit = parse_criteria({"type": "identity", "identity": "customerid", "op": "exists"})
    assert to_json(crit)["identity"] == "customer_id"
    defn = parse_calculated_attribute(
        {
            "name": "ltv",
            "calculation": "sum",
            "event": {"event_type": "commerce_event", "action": "purchase"},
            "attribute": "total_amount",
            "window": {"within": 30},
        }
    )
    assert (
        defn.window is not None
        and defn.window.within is not None
        and defn.window.within.ms == 30 * 86_400_000
    )
    with pytest.raises(InvalidCriteria, match="attribute: 'sum' needs an attribute"):
        parse_calculated_attribute(
            {"name": "x", "calculation": "sum", "event": {"event_type": "custom_event"}}
        )
