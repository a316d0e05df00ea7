"""The small core every evaluator implements, and the lowering of the rich leaves of SPEC §4.1 to it.

Windows become time ranges, install/upgrade become flags, predictions become user attributes,
calculated attributes carry their definition, and audience names must already be resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from milepost.criteria import model as m
from milepost.criteria.values import DAY_MS, day_start
from milepost.errors import InvalidCriteria, UnknownReference


@dataclass(frozen=True)
class Selector:
    """Matches events; `flag` selects install/upgrade pseudo types instead of an event_type."""

    event_type: str | None
    name_lc: str | None
    custom_event_type_lc: str | None
    action_lc: str | None
    flag: Literal["is_install", "is_upgrade"] | None
    where: tuple[m.Condition, ...]


@dataclass(frozen=True)
class TimeRange:
    """Events with ts in the range, always capped at now. Rolling bounds are offsets back from now.

    kind "rolling": (now - older_ms, now - newer_ms]; "lookback": (now - lookback, now];
    "absolute": [start_ms, end_ms) where either may be None; "parent": (parent entry, now].
    """

    kind: Literal["rolling", "lookback", "absolute", "parent", "all"]
    older_ms: int = 0
    newer_ms: int = 0
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class ValueTest:
    """A condition on one profile value: `source` is attribute, identity, device, seen or calc."""

    source: Literal["attribute", "identity", "device", "first_seen", "last_seen", "calculated"]
    key: str  # attribute name, identity type, device field; unused for seen
    cond: m.Condition
    calc: m.CalculatedAttribute | None = None


@dataclass(frozen=True)
class ConsentTest:
    regulation: str
    purpose: str
    state: str


@dataclass(frozen=True)
class EventTest:
    selector: Selector
    window: TimeRange
    fn: str
    attribute: str | None
    test: m.Condition


@dataclass(frozen=True)
class SequenceTest:
    first: Selector
    then: Selector
    within_ms: int
    completed: bool
    window: TimeRange


@dataclass(frozen=True)
class MembershipTest:
    audience_id: int
    member: bool
    min_ms: int | None  # member for at least this long


@dataclass(frozen=True)
class ParentEntryTest:
    op: str
    ms: int


Node = And | Or | Not | ValueTest | ConsentTest | EventTest | SequenceTest | MembershipTest | ParentEntryTest


def selector(sel: m.EventSelector, where: tuple[m.Condition, ...]) -> Selector:
    flag: Literal["is_install", "is_upgrade"] | None = None
    event_type: str | None = sel.event_type
    if sel.event_type in ("install", "upgrade"):
        flag = "is_install" if sel.event_type == "install" else "is_upgrade"
        event_type = None
    low = lambda s: None if s is None else s.lower()  # noqa: E731
    return Selector(event_type, low(sel.name), low(sel.custom_event_type), low(sel.action), flag, where)


def time_range(w: m.Window | None) -> TimeRange:
    if w is None:
        return TimeRange("lookback")
    if isinstance(w, m.LastWindow):
        return TimeRange("rolling", older_ms=w.last.ms)
    if isinstance(w, m.BetweenAgoWindow):
        unit = m.UNIT_MS[w.between_ago.unit]
        return TimeRange("rolling", older_ms=w.between_ago.to * unit, newer_ms=w.between_ago.from_ * unit)
    if isinstance(w, m.SinceParentEntryWindow):
        return TimeRange("parent")
    days = [day_start(d) or 0 for d in w.dates]
    if w.kind in ("since", "after"):
        return TimeRange("absolute", start_ms=days[0])
    if w.kind == "before":
        return TimeRange("absolute", end_ms=days[0])
    if w.kind == "on_date":
        return TimeRange("absolute", start_ms=days[0], end_ms=days[0] + DAY_MS)
    return TimeRange("absolute", start_ms=days[0], end_ms=days[1] + DAY_MS)


def calc_range(defn: m.CalculatedAttribute) -> TimeRange:
    if defn.window is None:
        return TimeRange("all")
    if defn.window.within is not None:
        return TimeRange("rolling", older_ms=defn.window.within.ms)
    return TimeRange("absolute", start_ms=day_start(defn.window.since))


def lower(criteria: m.Criteria, calculated: Mapping[str, m.CalculatedAttribute]) -> Node:
    """Lower a parsed criteria tree to the core; unknown calculated attributes are rejected."""
    c = criteria
    if isinstance(c, m.AllGroup):
        return And(tuple(lower(x, calculated) for x in c.all))
    if isinstance(c, m.AnyGroup):
        return Or(tuple(lower(x, calculated) for x in c.any))
    if isinstance(c, m.NotGroup):
        return Not(lower(c.not_, calculated))
    if isinstance(c, m.EventLeaf):
        h = c.having
        return EventTest(selector(c.event, c.where), time_range(c.window), h.fn, h.attribute, h.condition())
    if isinstance(c, m.SequenceLeaf):
        first, then = selector(c.first, c.first.where), selector(c.then, c.then.where)
        return SequenceTest(first, then, c.within.ms, c.completed, time_range(c.window))
    if isinstance(c, m.UserAttributeLeaf):
        return ValueTest("attribute", c.attribute, c.condition())
    if isinstance(c, m.PredictionLeaf):
        return ValueTest("attribute", c.attribute, c.condition())
    if isinstance(c, m.CalculatedAttributeLeaf):
        if c.name not in calculated:
            raise UnknownReference(f"name: unknown calculated attribute {c.name!r}")
        return ValueTest("calculated", c.name, c.condition(), calculated[c.name])
    if isinstance(c, m.IdentityLeaf):
        return ValueTest("identity", c.identity, c.condition())
    if isinstance(c, m.DeviceLeaf):
        return ValueTest("device", c.field, c.condition())
    if isinstance(c, m.FirstSeenLeaf | m.LastSeenLeaf):
        return ValueTest(c.type, c.type, c.condition())
    if isinstance(c, m.ConsentLeaf):
        return ConsentTest(c.regulation, c.purpose, c.state)
    if isinstance(c, m.AudienceLeaf):
        if c.audience_id is None:
            raise InvalidCriteria(f"audience {c.journey!r}/{c.milestone!r} is not resolved to an id")
        return MembershipTest(c.audience_id, c.member, None if c.member_for is None else c.member_for.ms)
    assert isinstance(c, m.ParentEntryLeaf)
    return ParentEntryTest(c.op, c.value.ms)
