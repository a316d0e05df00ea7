"""Canonical JSON of a criteria model, and what a criteria tree refers to (audiences, parent entry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from milepost.criteria.model import (
    AllGroup,
    AnyGroup,
    AudienceLeaf,
    BetweenAgoWindow,
    CalculatedAttribute,
    CalculatedAttributeLeaf,
    Criteria,
    DateWindow,
    EventLeaf,
    LastWindow,
    NotGroup,
    ParentEntryLeaf,
    SequenceLeaf,
    SinceParentEntryWindow,
    Window,
)


def _window_json(w: Window) -> dict[str, Any]:
    if isinstance(w, LastWindow):
        return {"last": w.last.model_dump()}
    if isinstance(w, BetweenAgoWindow):
        b = w.between_ago
        return {"between_ago": {"from": b.from_, "to": b.to, "unit": b.unit}}
    if isinstance(w, DateWindow):
        return {w.kind: list(w.dates) if w.kind == "between_dates" else w.dates[0]}
    return {"since_parent_entry": True}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def to_json(criteria: Criteria) -> dict[str, Any]:
    """The canonical JSON object of a criteria tree; `parse_criteria(to_json(c)) == c`."""
    if isinstance(criteria, AllGroup):
        return {"all": [to_json(c) for c in criteria.all]}
    if isinstance(criteria, AnyGroup):
        return {"any": [to_json(c) for c in criteria.any]}
    if isinstance(criteria, NotGroup):
        return {"not": to_json(criteria.not_)}
    out: dict[str, Any] = _plain(criteria.model_dump(exclude_none=True, exclude={"window", "having"}))
    if isinstance(criteria, EventLeaf | SequenceLeaf):
        if isinstance(criteria, EventLeaf):
            if not criteria.where:
                out.pop("where", None)
            out["having"] = _plain(criteria.having.model_dump(exclude_none=True))
        for step in ("first", "then"):
            if isinstance(out.get(step), dict) and not out[step].get("where"):
                out[step].pop("where", None)
        if criteria.window is not None:
            out["window"] = _window_json(criteria.window)
    return out


def calculated_attribute_json(defn: CalculatedAttribute) -> dict[str, Any]:
    out: dict[str, Any] = _plain(defn.model_dump(exclude_none=True))
    if not out.get("where"):
        out.pop("where", None)
    return out


def walk(criteria: Criteria) -> Iterator[Criteria]:
    """Every node of a criteria tree, groups included, depth first."""
    yield criteria
    if isinstance(criteria, AllGroup):
        for c in criteria.all:
            yield from walk(c)
    elif isinstance(criteria, AnyGroup):
        for c in criteria.any:
            yield from walk(c)
    elif isinstance(criteria, NotGroup):
        yield from walk(criteria.not_)


@dataclass(frozen=True)
class References:
    """What a criteria tree depends on outside the user's own data."""

    audience_ids: frozenset[int]
    audience_names: frozenset[tuple[str, str]]  # (journey, milestone) of unresolved references
    calculated_attributes: frozenset[str]
    uses_parent_entry: bool  # a parent_entry leaf or a since_parent_entry window


def references(criteria: Criteria) -> References:
    ids: set[int] = set()
    names: set[tuple[str, str]] = set()
    calcs: set[str] = set()
    parent = False
    for node in walk(criteria):
        if isinstance(node, AudienceLeaf):
            if node.audience_id is not None:
                ids.add(node.audience_id)
            elif node.journey is not None and node.milestone is not None:
                names.add((node.journey, node.milestone))
        elif isinstance(node, CalculatedAttributeLeaf):
            calcs.add(node.name)
        elif isinstance(node, ParentEntryLeaf) or (
            isinstance(node, EventLeaf | SequenceLeaf) and isinstance(node.window, SinceParentEntryWindow)
        ):
            parent = True
    return References(frozenset(ids), frozenset(names), frozenset(calcs), parent)


def resolve_audiences(criteria: Criteria, resolve: Callable[[str, str], int]) -> Criteria:
    """Replace `journey` + `milestone` names in audience leaves by the id `resolve` returns."""
    if isinstance(criteria, AllGroup):
        return AllGroup(all=tuple(resolve_audiences(c, resolve) for c in criteria.all))
    if isinstance(criteria, AnyGroup):
        return AnyGroup(any=tuple(resolve_audiences(c, resolve) for c in criteria.any))
    if isinstance(criteria, NotGroup):
        return NotGroup(not_=resolve_audiences(criteria.not_, resolve))
    if isinstance(criteria, AudienceLeaf) and criteria.audience_id is None:
        assert criteria.journey is not None and criteria.milestone is not None
        audience_id = resolve(criteria.journey, criteria.milestone)
        return criteria.model_copy(update={"audience_id": audience_id, "journey": None, "milestone": None})
    return criteria
