"""Journey trees as the evaluator sees them, and the order in which their sibling groups are computed.

A journey is evaluated top-down, one sibling group at a time: a group's members are drawn from
its parent's members (a child is computed only within its parent), and a group that refers to
another audience (an `audience` leaf) comes after the group that computes that audience.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from milepost.criteria import Criteria, parse_criteria, references
from milepost.errors import JourneyRuleViolation


def root_audience_id(journey_id: int) -> int:
    """A journey root's id: when its membership is stored (see `Plan.stored_roots`), it is kept like an
    audience's, under a negative id no audience has."""
    return -journey_id


@dataclass(frozen=True)
class MilestoneRow:
    """One milestone as stored: what the tree is built from."""

    id: int
    journey_id: int
    parent_id: int | None
    position: int
    name: str
    audience_id: int
    criteria: dict[str, Any] | None
    remaining: bool


@dataclass(frozen=True)
class JourneyRows:
    id: int
    name: str
    input_ids: tuple[int, ...]
    milestones: tuple[MilestoneRow, ...]


@dataclass(frozen=True)
class Child:
    audience_id: int
    name: str
    criteria: Criteria | None  # None: the remaining users split


@dataclass(frozen=True)
class SiblingGroup:
    """Ordered exclusive siblings under one parent audience (or the root)."""

    journey_id: int
    parent_audience_id: int
    input_ids: tuple[int, ...]
    children: tuple[Child, ...]
    depends_on: frozenset[int] = field(default_factory=frozenset)
    # Indices of children that read an earlier sibling's audience: each starts a new evaluation
    # segment, so it sees that sibling's membership as this evaluation leaves it.
    segment_starts: tuple[int, ...] = ()

    @property
    def audience_ids(self) -> tuple[int, ...]:
        return tuple(c.audience_id for c in self.children)


def sibling_groups(journey: JourneyRows) -> list[SiblingGroup]:
    """The journey's sibling groups; each depends on its parent and on the audiences its criteria name."""
    by_parent: dict[int | None, list[MilestoneRow]] = {}
    for m in journey.milestones:
        by_parent.setdefault(m.parent_id, []).append(m)
    audience_of = {m.id: m.audience_id for m in journey.milestones}
    groups: list[SiblingGroup] = []
    for parent_id, rows in by_parent.items():
        rows.sort(key=lambda m: (m.remaining, m.position))
        own = {m.audience_id: i for i, m in enumerate(rows)}
        children: list[Child] = []
        deps: set[int] = set()
        starts: list[int] = []
        for i, m in enumerate(rows):
            crit = None
            if not m.remaining:
                crit = parse_criteria(m.criteria if m.criteria is not None else {"all": []})
                refs = set(references(crit).audience_ids)
                for a in refs & own.keys():
                    if own[a] >= i:
                        what = "itself" if own[a] == i else f"a later sibling, {rows[own[a]].name!r}"
                        raise JourneyRuleViolation(
                            f"audience references would form a cycle: milestone {m.name!r} refers to {what}; "
                            "a milestone may refer only to earlier siblings, other paths and other journeys"
                        )
                if refs & own.keys():
                    starts.append(i)
                deps |= refs - own.keys()
            children.append(Child(m.audience_id, m.name, crit))
        parent_audience = root_audience_id(journey.id) if parent_id is None else audience_of[parent_id]
        if parent_id is not None:
            deps.add(parent_audience)
        groups.append(
            SiblingGroup(
                journey.id,
                parent_audience,
                journey.input_ids,
                tuple(children),
                frozenset(deps),
                tuple(starts),
            )
        )
    return groups


def evaluation_order(groups: Iterable[SiblingGroup]) -> list[SiblingGroup]:
    """Groups in dependency order: an audience is computed before any group that reads it."""
    pending = list(groups)
    produced_by = {a: g for g in pending for a in g.audience_ids}
    done: set[int] = set()
    ordered: list[SiblingGroup] = []
    while pending:
        ready = [g for g in pending if all(d in done or d not in produced_by or d < 0 for d in g.depends_on)]
        if not ready:
            names = ", ".join(c.name for g in pending for c in g.children)
            raise JourneyRuleViolation(f"audience references form a cycle among: {names}")
        for g in ready:
            ordered.append(g)
            done.update(g.audience_ids)
            pending.remove(g)
    return ordered


def all_criteria(groups: Sequence[SiblingGroup]) -> list[Criteria]:
    return [c.criteria for g in groups for c in g.children if c.criteria is not None]
