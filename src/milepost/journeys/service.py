"""The journey service: creates and changes journeys in the catalog and keeps the audience engine in step.

Every change re-plans the engine and re-evaluates, so later siblings, remaining splits and their
descendants move users between paths at once; audience ids are kept and only net changes are logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from milepost.audiences.engine import AudienceEngine, EngineSettings, EvalResult
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.catalog import Catalog
from milepost.criteria import (
    CalculatedAttribute,
    parse_calculated_attribute,
    parse_criteria,
    resolve_audiences,
    to_json,
)

DAY_MS = 86_400_000


class JourneyService:
    def __init__(self, catalog: Catalog, engine: AudienceEngine, now: Callable[[], int]) -> None:
        self.catalog = catalog
        self.engine = engine
        self.now = now

    # ---- documents --------------------------------------------------------------------------

    def create(self, document: dict[str, Any]) -> int:
        """Create a journey from a journey document (SPEC §7.1); return its id."""
        names = document.get("inputs")
        input_ids = [self.catalog.get_input(n).id for n in names] if names is not None else None
        journey = self.catalog.create_journey(document["name"], input_ids)
        self._add_children(journey.id, None, document.get("milestones") or [])
        self.refresh()
        return journey.id

    def _add_children(self, journey_id: int, parent_id: int | None, milestones: list[dict[str, Any]]) -> None:
        for m in milestones:
            if m.get("remaining"):
                row = self.catalog.add_milestone(
                    journey_id, parent_id=parent_id, name=m["name"], remaining=True
                )
            else:
                criteria = self._resolved(m.get("criteria", {"all": []}))
                row = self.catalog.add_milestone(
                    journey_id, parent_id=parent_id, name=m["name"], criteria=criteria
                )
            self._add_children(journey_id, row.id, m.get("children") or [])

    def _resolved(self, criteria: dict[str, Any]) -> dict[str, Any]:
        """Audience leaves may name journey and milestone; store them by audience id."""
        parsed = resolve_audiences(parse_criteria(criteria), self.catalog.find_audience)
        return to_json(parsed)

    # ---- changes ------------------------------------------------------------------------------

    def edit_criteria(self, milestone_id: int, criteria: dict[str, Any]) -> EvalResult:
        self.catalog.update_milestone(milestone_id, criteria=self._resolved(criteria))
        return self.refresh()

    def reorder(self, journey: int | str, parent_id: int | None, order: list[int]) -> EvalResult:
        self.catalog.reorder_milestones(journey, parent_id, order)
        return self.refresh()

    # ---- the engine's view ---------------------------------------------------------------------

    def journeys(self) -> list[JourneyRows]:
        out = []
        for j in self.catalog.list_journeys():
            rows = tuple(
                MilestoneRow(
                    m.id,
                    m.journey_id,
                    m.parent_id,
                    m.position,
                    m.name,
                    m.audience_id,
                    m.criteria,
                    m.remaining,
                )
                for m in self.catalog.milestones(j.id)
            )
            out.append(JourneyRows(j.id, j.name, tuple(j.input_ids), rows))
        return out

    def calculated(self) -> dict[str, CalculatedAttribute]:
        return {
            c.name: parse_calculated_attribute(c.definition)
            for c in self.catalog.list_calculated_attributes()
        }

    def settings(self) -> EngineSettings:
        s = self.catalog.get_settings()
        return EngineSettings(s.lookback_days * DAY_MS, s.effective_profile_lifetime_days * DAY_MS)

    def refresh(self) -> EvalResult:
        """Re-plan the engine from the catalog and recompute every maintained audience."""
        self.engine.configure(self.journeys(), self.calculated(), self.settings())
        return self.engine.full_calculation(self.now(), cause="edit")
