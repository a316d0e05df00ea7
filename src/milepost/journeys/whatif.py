"""Journeys as they would be after a change, built in memory for dry runs (nothing is stored)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from milepost.audiences.tree import JourneyRows, MilestoneRow

NEW_MILESTONE_ID = -1
NEW_AUDIENCE_ID = 10**15  # no stored audience has it; its changes are not reported


def _siblings(j: JourneyRows, parent_id: int | None) -> list[MilestoneRow]:
    return sorted(
        (m for m in j.milestones if m.parent_id == parent_id), key=lambda m: (m.remaining, m.position)
    )


def _renumber(j: JourneyRows, parent_id: int | None, ordered: list[MilestoneRow]) -> JourneyRows:
    pos = {m.id: i for i, m in enumerate(ordered)}
    others = [m for m in j.milestones if m.parent_id != parent_id]
    return replace(j, milestones=(*others, *(replace(m, position=pos[m.id]) for m in ordered)))


def with_added(
    j: JourneyRows,
    parent_id: int | None,
    name: str,
    criteria: dict[str, Any] | None,
    remaining: bool,
    position: int | None,
) -> JourneyRows:
    sibs = _siblings(j, parent_id)
    regular = [m for m in sibs if not m.remaining]
    rest = [m for m in sibs if m.remaining]
    new = MilestoneRow(NEW_MILESTONE_ID, j.id, parent_id, 0, name, NEW_AUDIENCE_ID, criteria, remaining)
    if remaining:
        ordered = [*regular, new]
    else:
        at = len(regular) if position is None else max(0, min(position, len(regular)))
        ordered = [*regular[:at], new, *regular[at:], *rest]
    return _renumber(replace(j, milestones=(*j.milestones, new)), parent_id, ordered)


def with_edited(
    j: JourneyRows, milestone_id: int, criteria: dict[str, Any] | None, position: int | None
) -> JourneyRows:
    target = next(m for m in j.milestones if m.id == milestone_id)
    if criteria is not None:
        target = replace(target, criteria=criteria)
        j = replace(j, milestones=tuple(target if m.id == milestone_id else m for m in j.milestones))
    if position is None:
        return j
    sibs = [m for m in _siblings(j, target.parent_id) if m.id != milestone_id]
    regular = [m for m in sibs if not m.remaining]
    rest = [m for m in sibs if m.remaining]
    at = max(0, min(position, len(regular)))
    return _renumber(j, target.parent_id, [*regular[:at], target, *regular[at:], *rest])


def with_deleted(j: JourneyRows, milestone_id: int) -> JourneyRows:
    return replace(j, milestones=tuple(m for m in j.milestones if m.id != milestone_id))


def with_inputs(j: JourneyRows, input_ids: tuple[int, ...]) -> JourneyRows:
    return replace(j, input_ids=input_ids)
