"""The rows of an estimate's per-criterion breakdown."""

from __future__ import annotations

from milepost.criteria import Criteria
from milepost.criteria.model import AllGroup, AnyGroup


def top_level(criteria: Criteria) -> tuple[str, list[Criteria]]:
    """The rows of the per-criterion breakdown: members of a top-level all/any, else the criteria itself."""
    if isinstance(criteria, AllGroup):
        return "all", list(criteria.all)
    if isinstance(criteria, AnyGroup):
        return "any", list(criteria.any)
    return "one", [criteria]
