"""When a user's truth can next change without new data: the durations and dates criteria depend on.

A user's next timer is the earliest future instant among: each of their events' time plus every
duration the event-reading leaves use (windows, `between_ago` bounds, sequence `within`, the
lookback of leaves without a window, calculated-attribute windows; none when no leaf reads events), their seen times plus the
profile lifetime and the first/last-seen leaves' durations (with no such leaf and no leaf reading
events: only the end of their lifetime, and only for users with a membership, as leaving the root
can only end memberships), their memberships' entry times plus
`parent_entry` / `member_for` durations, and their date-valued attributes plus the rolling durations
applied to them. Only events of a kind some leaf reads count (`event_kinds`): another event's
time flips nothing. This over-approximates the instants at which a leaf can flip; re-evaluating
at a non-flip instant changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from milepost.criteria import CalculatedAttribute, Criteria, core
from milepost.criteria.model import (
    UNIT_MS,
    AudienceLeaf,
    BetweenAgo,
    CalculatedAttributeLeaf,
    Duration,
    EventLeaf,
    FirstSeenLeaf,
    LastSeenLeaf,
    ParentEntryLeaf,
    PredictionLeaf,
    SequenceLeaf,
    UserAttributeLeaf,
)

ROLLING_OPS = frozenset({"within_last", "more_than_ago"})
# Beyond this many kinds of event, testing each event's kind costs more than grouping the events
# it leaves out saves (a million users: three kinds, 77% of the events, cost a full calculation's
# scan 0.08 s more CPU; one kind, 17% of them, saved it 0.14 s).
MAX_KINDS = 2


@dataclass(frozen=True)
class Boundaries:
    durations_ms: frozenset[int]  # every duration the criteria use, the lookback and the lifetime
    attribute_durations: frozenset[tuple[str, int]]  # (user attribute, duration) for rolling date ops
    # Per time source, the durations that can flip a leaf reading it (subsets of `durations_ms`):
    # event times (event, sequence and calculated-attribute leaves), seen times (the profile
    # lifetime, first/last-seen leaves) and membership entry times (`member_for`, `parent_entry`).
    event_durations_ms: frozenset[int] = frozenset()
    seen_durations_ms: frozenset[int] = frozenset()
    entry_durations_ms: frozenset[int] = frozenset()
    # The kinds of event whose times count (their `where` conditions dropped, which only widens
    # them), in a fixed order; None: every event (a calculated attribute reads events, or more
    # than `MAX_KINDS` kinds are read).
    event_kinds: tuple[core.Selector, ...] | None = None
    # Whether a first/last-seen leaf reads the seen times (`timer_sql.members_only`).
    seen_leaf: bool = False


def walk(node: object) -> Iterator[object]:
    """Every node of a criteria tree (models, tuples and lists), depth first."""
    yield node
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from walk(getattr(node, name))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk(item)


def _durations(node: object) -> set[int]:
    found: set[int] = set()
    for n in walk(node):
        if isinstance(n, Duration):
            found.add(n.ms)
        elif isinstance(n, BetweenAgo):
            unit = UNIT_MS[n.unit]
            found.update({n.from_ * unit, n.to * unit})
    return found


def boundaries(
    criteria: Iterable[Criteria],
    calculated: Iterable[CalculatedAttribute],
    lookback_ms: int,
    lifetime_ms: int,
) -> Boundaries:
    criteria, calculated = list(criteria), list(calculated)
    durations = {0, lookback_ms, lifetime_ms}
    events: set[int] = set()
    reads_events = False
    seen = {0, lifetime_ms}
    entry: set[int] = set()
    attribute_durations: set[tuple[str, int]] = set()
    kinds: set[core.Selector] | None = set()
    seen_leaf = False
    for node in walk([*criteria, *calculated]):
        if isinstance(node, Duration | BetweenAgo):
            durations |= _durations(node)
        if (
            isinstance(node, UserAttributeLeaf | PredictionLeaf)
            and node.op in ROLLING_OPS
            and isinstance(node.value, Duration)
        ):
            attribute_durations.add((node.attribute, node.value.ms))
        if isinstance(node, EventLeaf | SequenceLeaf | CalculatedAttributeLeaf):
            reads_events = True
            events |= _durations(node)
            if isinstance(node, EventLeaf) and kinds is not None:
                kinds.add(core.selector(node.event, ()))
            elif isinstance(node, SequenceLeaf) and kinds is not None:
                kinds |= {core.selector(node.first, ()), core.selector(node.then, ())}
            else:
                kinds = None
            if isinstance(node, EventLeaf | SequenceLeaf) and node.window is None:
                events.add(lookback_ms)  # counts events within the lookback
        elif isinstance(node, FirstSeenLeaf | LastSeenLeaf):
            seen |= _durations(node)
            seen_leaf = True
        elif isinstance(node, AudienceLeaf | ParentEntryLeaf):
            entry |= _durations(node)
    if reads_events:
        # Any leaf reading events: calculated-attribute windows, and 0 (an event dated after `now`
        # counts once its time comes). The lookback bounds only leaves without a window (a window
        # replaces it), so only those add it above.
        events |= {0, *(d for c in calculated for d in _durations(c))}
    return Boundaries(
        frozenset(durations),
        frozenset(attribute_durations),
        frozenset(events),
        frozenset(seen),
        frozenset(entry),
        None if kinds is None or len(kinds) > MAX_KINDS else tuple(sorted(kinds, key=_kind_order)),
        seen_leaf,
    )


def _kind_order(k: core.Selector) -> tuple[str, ...]:
    return tuple(v or "" for v in (k.event_type, k.name_lc, k.custom_event_type_lc, k.action_lc, k.flag))
