"""Immutable records of journeys, milestones (with their audiences) and calculated attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JourneyRecord:
    """A journey: a name and the inputs it selects (ids in ascending order)."""

    id: int
    name: str
    input_ids: tuple[int, ...]
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class MilestoneRecord:
    """A milestone and the audience it owns.

    `parent_id` None is the journey root; `position` is 0-based among the parent's children, a
    remaining users split (`remaining`, `criteria` None) always last. `criteria` is the canonical
    JSON of the milestone's criteria. `external_name` is the audience's name at partners: the one
    set, or the default "journey name – milestone name".
    """

    id: int
    journey_id: int
    parent_id: int | None
    position: int
    name: str
    criteria: dict[str, Any] | None
    remaining: bool
    audience_id: int
    external_name: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class CalculatedAttributeRecord:
    """An account-level calculated attribute; `definition` is its canonical JSON, name included."""

    id: int
    name: str
    definition: dict[str, Any]
    created_at: int
    updated_at: int
