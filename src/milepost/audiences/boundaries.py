"""When a user's truth can next change without new data: the durations and dates criteria depend on.

A user's next timer is the earliest future instant among: each of their events' time plus every
duration the maintained criteria use (windows, `between_ago` bounds, sequence `within`, the
lookback, calculated-attribute windows), their seen times plus those durations and the profile
lifetime, their memberships' entry times plus `parent_entry` / `member_for` durations, and their
date-valued attributes plus the rolling durations applied to them. This over-approximates the
instants at which a leaf can flip; re-evaluating at a non-flip instant changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from milepost.criteria import CalculatedAttribute, Criteria
from milepost.criteria.model import UNIT_MS, BetweenAgo, Duration, PredictionLeaf, UserAttributeLeaf

ROLLING_OPS = frozenset({"within_last", "more_than_ago"})


@dataclass(frozen=True)
class Boundaries:
    durations_ms: frozenset[int]  # added to event times, seen times and entry times
    attribute_durations: frozenset[tuple[str, int]]  # (user attribute, duration) for rolling date ops


def _walk(node: object) -> Iterator[object]:
    yield node
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _walk(getattr(node, name))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def boundaries(
    criteria: Iterable[Criteria],
    calculated: Iterable[CalculatedAttribute],
    lookback_ms: int,
    lifetime_ms: int,
) -> Boundaries:
    durations = {0, lookback_ms, lifetime_ms}
    attribute_durations: set[tuple[str, int]] = set()
    for node in _walk([*criteria, *calculated]):
        if isinstance(node, Duration):
            durations.add(node.ms)
        elif isinstance(node, BetweenAgo):
            unit = UNIT_MS[node.unit]
            durations.update({node.from_ * unit, node.to * unit})
        if (
            isinstance(node, UserAttributeLeaf | PredictionLeaf)
            and node.op in ROLLING_OPS
            and isinstance(node.value, Duration)
        ):
            attribute_durations.add((node.attribute, node.value.ms))
    return Boundaries(frozenset(durations), frozenset(attribute_durations))
