"""Which audiences are calculated (SPEC §2), derived from activations: pure, so the rule is testable alone.

Calculated = every activated audience, every ancestor on its path, every audience its criteria
(or its ancestors' criteria) refer to, transitively; plus the parent of every milestone that waits
on its parent entry (`parent_entry`, `since_parent_entry`), since entry times live with membership.
"""

from __future__ import annotations

from collections.abc import Iterable

from milepost.audiences.tree import JourneyRows
from milepost.criteria import parse_criteria, references


def calculated_set(journeys: Iterable[JourneyRows], activated: Iterable[int]) -> frozenset[int]:
    parent: dict[int, int | None] = {}
    refers: dict[int, set[int]] = {}
    waits: list[int] = []
    for j in journeys:
        audience_of = {m.id: m.audience_id for m in j.milestones}
        for m in j.milestones:
            parent[m.audience_id] = audience_of.get(m.parent_id) if m.parent_id is not None else None
            refs = references(parse_criteria(m.criteria)) if m.criteria is not None else None
            refers[m.audience_id] = set(refs.audience_ids) if refs else set()
            if refs is not None and refs.uses_parent_entry and m.parent_id is not None:
                waits.append(audience_of[m.parent_id])
    work = [a for a in activated if a in parent] + waits
    out: set[int] = set()
    while work:
        a = work.pop()
        if a in out or a not in parent:
            continue
        out.add(a)
        up = parent[a]
        if up is not None:
            work.append(up)
        work.extend(refers[a])
    return frozenset(out)
