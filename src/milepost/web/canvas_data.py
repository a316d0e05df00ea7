"""What the pages show at once, read from the catalog only: no estimate, no count over the store."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from milepost.catalog.journey_records import MilestoneRecord
from milepost.journeys.views import connection_summary
from milepost.runtime import Runtime


def _audience_refs(criteria: Any) -> set[int]:
    """Audience IDs that `audience` leaves of a criteria document refer to."""
    if isinstance(criteria, dict):
        found = (
            {criteria["audience_id"]}
            if criteria.get("type") == "audience" and isinstance(criteria.get("audience_id"), int)
            else set()
        )
        for value in criteria.values():
            found |= _audience_refs(value)
        return found
    if isinstance(criteria, list):
        return set().union(*(_audience_refs(c) for c in criteria)) if criteria else set()
    return set()


def _delete_blocks(rt: Runtime, milestones: list[MilestoneRecord]) -> dict[int, str | None]:
    """Why each milestone cannot be deleted now (SPEC §2 "Deleting"), or None if it can.

    Read off the tree and the criteria of every journey, worded as the catalog words its refusals,
    so the page needs no catalog transaction per milestone; the API enforces the rules anyway.
    """
    referrers: dict[int, list[str]] = {}
    for j in rt.catalog.list_journeys():
        for other in rt.catalog.milestones(j.id) if j.id != milestones[0].journey_id else milestones:
            for audience_id in _audience_refs(other.criteria):
                referrers.setdefault(audience_id, []).append(
                    f"milestone {other.name!r} in journey {j.name!r}"
                )
    out: dict[int, str | None] = {}
    kids: dict[int | None, list[MilestoneRecord]] = {}
    for m in milestones:
        kids.setdefault(m.parent_id, []).append(m)
    for m in milestones:
        refused = f"cannot delete {'remaining users split' if m.remaining else 'milestone'} {m.name!r}"
        below = kids.get(m.id, [])
        later = [s for s in kids.get(m.parent_id, []) if s.position > m.position]
        users = referrers.get(m.audience_id, [])
        if below:
            names = ", ".join(repr(b.name) for b in below)
            out[m.id] = (
                f"{refused}: {len(below)} milestone{'s' if len(below) > 1 else ''} ({names}) hang below it; delete them first, last to first"
            )
        elif later:
            last = max(later, key=lambda s: s.position)
            kind = "the remaining users split" if last.remaining else "milestone"
            out[m.id] = (
                f"{refused}: milestones are removed from last to first; delete {kind} {last.name!r} first"
            )
        elif users:
            one = len(users) == 1
            out[m.id] = (
                f"{refused}: {'; '.join(users)} {'refers' if one else 'refer'} to its audience ({m.audience_id}); "
                f"remove {'that reference' if one else 'those references'} first"
            )
        else:
            out[m.id] = None
    return out


def journey(rt: Runtime, journey_id: int) -> dict[str, Any]:
    """The canvas: the journey, its milestones in tree order with status and connections, the outputs."""
    j = rt.catalog.get_journey(journey_id)
    service = rt.journeys
    activated = service.activated()
    calculated, pending = service.calculated, set(service.pending)
    inputs = {i.id: i for i in rt.catalog.list_inputs()}
    by_audience: dict[int, list[dict[str, Any]]] = {}
    for c in rt.catalog.connections():
        by_audience.setdefault(c.audience_id, []).append(connection_summary(c))
    nodes = []
    milestones = rt.catalog.milestones(j.id)
    blocks = _delete_blocks(rt, milestones) if milestones else {}
    for m in milestones:
        status = (
            "activated"
            if m.audience_id in activated
            else "calculated"
            if m.audience_id in calculated
            else "estimated"
        )
        nodes.append(
            {
                "id": m.id,
                "parent_id": m.parent_id,
                "position": m.position,
                "name": m.name,
                "remaining": m.remaining,
                "criteria": m.criteria,
                "audience_id": m.audience_id,
                "external_name": m.external_name,
                "status": status,
                "calculating": m.audience_id in pending,
                "connections": by_audience.get(m.audience_id, []),
                "delete_block": blocks[m.id],
            }
        )
    nodes.sort(key=lambda n: (n["parent_id"] or 0, n["remaining"], n["position"]))
    return {
        "journey": {
            "id": j.id,
            "name": j.name,
            "updated_at": j.updated_at,
            "inputs": [
                {
                    "id": i,
                    "name": inputs[i].name if i in inputs else str(i),
                    "platform": inputs[i].platform if i in inputs else "",
                    "workspace": inputs[i].workspace_name if i in inputs else "",
                    "enabled": inputs[i].enabled if i in inputs else False,
                }
                for i in j.input_ids
            ],
        },
        "nodes": nodes,
        "outputs": [{"id": o.id, "name": o.name, "type": o.type} for o in rt.catalog.list_outputs()],
    }


def journey_has_activated(rt: Runtime, journey_id: int) -> bool:
    activated = rt.journeys.activated()
    return any(m.audience_id in activated for m in rt.catalog.milestones(journey_id))


def outputs(rt: Runtime) -> dict[str, Any]:
    """Outputs with their connections, each connection placed in its journey and milestone."""
    milestones: dict[int, MilestoneRecord] = {}
    journeys = {j.id: j.name for j in rt.catalog.list_journeys()}
    for jid in journeys:
        for m in rt.catalog.milestones(jid):
            milestones[m.audience_id] = m
    listed = []
    connections = rt.catalog.connections()
    for o in sorted(rt.catalog.list_outputs(), key=lambda o: o.name.casefold()):
        mine = []
        for c in connections:
            if c.output_id != o.id:
                continue
            owner = milestones.get(c.audience_id)
            mine.append(
                {
                    **connection_summary(c),
                    "audience_id": c.audience_id,
                    "milestone": owner.name if owner else "",
                    "journey_id": owner.journey_id if owner else None,
                    "journey": journeys.get(owner.journey_id, "") if owner else "",
                }
            )
        listed.append(
            {
                "id": o.id,
                "type": o.type,
                "name": o.name,
                "target": _target(o.type, o.settings),
                "connections": mine,
            }
        )
    audiences = [
        {"id": a, "journey": journeys.get(m.journey_id, ""), "milestone": m.name}
        for a, m in sorted(milestones.items())
    ]
    return {"outputs": listed, "audiences": audiences}


def _target(kind: str, settings: dict[str, Any]) -> str:
    """Where an output sends, without credentials: a URL's host and path, or a directory."""
    for key in ("url", "base_url", "directory"):
        value = settings.get(key)
        if isinstance(value, str):
            if key == "directory":
                return value
            url = urlsplit(value)
            return f"{url.scheme}://{url.hostname or ''}{f':{url.port}' if url.port else ''}{url.path}"
    return kind
