"""The journey service: journeys in the catalog, the audience engine kept in step, dry runs.

Every change re-plans the engine (which audiences are calculated follows from activations) and
re-evaluates, so later siblings, remaining splits and their descendants move users between paths
at once; audience ids and connections are kept and only net changes are logged. Each change can
first be asked as a dry run, answering per activated audience how many users would enter and leave.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from milepost.audiences.engine import AudienceEngine, EngineSettings, EvalResult
from milepost.audiences.tree import JourneyRows, MilestoneRow, evaluation_order, sibling_groups
from milepost.catalog import Catalog
from milepost.catalog.journey_records import JourneyRecord, MilestoneRecord
from milepost.clock import DAY_MS
from milepost.criteria import (
    CalculatedAttribute,
    parse_calculated_attribute,
    parse_criteria,
    resolve_audiences,
    to_json,
)
from milepost.errors import InvalidRequest, JourneyRuleViolation
from milepost.journeys import whatif
from milepost.journeys.status import calculated_set

# Parts of a first calculation on the evaluator thread: sized to take about PART_S each, so real
# time runs between them instead of waiting behind the whole calculation. Each part also pays a
# cost that grows with the store (its scans), so a calculation has at most MAX_PARTS of them.
PART_S = 0.25
FIRST_PART_USERS = 10_000
MIN_PART_USERS = 2_000
MAX_PART_USERS = 1_000_000
MAX_PARTS = 48


class JourneyService:
    def __init__(
        self,
        catalog: Catalog,
        engine: AudienceEngine,
        now: Callable[[], int],
        *,
        maintain_all: bool = False,
    ) -> None:
        self.catalog = catalog
        self.engine = engine
        self.now = now
        self.maintain_all = maintain_all  # conformance's real-time mode keeps every audience calculated
        self.deferred = False  # in the server, first calculations run on the evaluator thread
        self.calculated: frozenset[int] = frozenset()
        self.pending: set[int] = set()  # calculated, first full calculation not finished: "calculating"
        self.stale = False  # the plan changed and the evaluator thread has not recalculated yet
        # The calculation run in parts (`settle_part`): the last mpid done and the users per part.
        self._cursor: int | None = None
        self._upto: int | None = None
        self._least = MIN_PART_USERS
        self._recovering = False  # the first calculation after start-up is due
        self._part_users = FIRST_PART_USERS
        self._lock = threading.RLock()

    # ---- documents --------------------------------------------------------------------------

    def create(self, document: dict[str, Any]) -> int:
        """Create a journey from a journey document (SPEC §7.1); return its id."""
        names = document.get("inputs")
        input_ids = [self.catalog.get_input(n).id for n in names] if names is not None else None
        journey = self.catalog.create_journey(document["name"], input_ids)
        try:
            self._add_children(journey.id, None, document.get("milestones") or [])
        except BaseException:
            self._drop(journey.id)
            raise
        self.refresh()
        return journey.id

    def _drop(self, journey_id: int) -> None:
        """Undo a half-created journey, deleting milestones last to first."""
        for m in sorted(self.catalog.milestones(journey_id), key=lambda m: -m.id):
            self.catalog.delete_milestone(m.id)
        self.catalog.delete_journey(journey_id)

    def _add_children(self, journey_id: int, parent_id: int | None, milestones: list[dict[str, Any]]) -> None:
        for m in milestones:
            if m.get("remaining"):
                row = self.catalog.add_milestone(
                    journey_id, parent_id=parent_id, name=m["name"], remaining=True
                )
            else:
                criteria = self.resolved(m.get("criteria", {"all": []}))
                row = self.catalog.add_milestone(
                    journey_id, parent_id=parent_id, name=m["name"], criteria=criteria
                )
            self._add_children(journey_id, row.id, m.get("children") or [])

    def resolved(self, criteria: dict[str, Any]) -> dict[str, Any]:
        """Validate criteria; audience leaves may name journey and milestone, stored by audience id."""
        return to_json(resolve_audiences(parse_criteria(criteria), self.catalog.find_audience))

    # ---- changes (each may be a dry run) ---------------------------------------------------------

    def rename(self, journey: int | str, name: str) -> None:
        self.catalog.rename_journey(journey, name)

    def delete(self, journey: int | str) -> None:
        self.catalog.delete_journey(journey)
        self.refresh()

    def set_inputs(
        self, journey: int | str, inputs: Sequence[int | str], dry_run: bool = False
    ) -> dict[str, Any] | None:
        j = self.catalog.get_journey(journey)
        ids = tuple(sorted({self.catalog.get_input(i).id for i in inputs}))
        if dry_run:
            return self._dry_run(j.id, lambda rows: whatif.with_inputs(rows, ids))
        self.catalog.set_journey_inputs(j.id, list(ids))
        self.refresh()
        return None

    def add_milestone(
        self,
        journey: int | str,
        *,
        parent_id: int | None,
        name: str,
        criteria: dict[str, Any] | None = None,
        remaining: bool = False,
        position: int | None = None,
        dry_run: bool = False,
    ) -> MilestoneRecord | dict[str, Any]:
        j = self.catalog.get_journey(journey)
        resolved = None if remaining or criteria is None else self.resolved(criteria)
        if dry_run:
            return self._dry_run(
                j.id, lambda rows: whatif.with_added(rows, parent_id, name, resolved, remaining, position)
            )
        self._check(
            j.id, lambda rows: whatif.with_added(rows, parent_id, name, resolved, remaining, position)
        )
        row = self.catalog.add_milestone(
            j.id, parent_id=parent_id, name=name, criteria=resolved, remaining=remaining, position=position
        )
        self.refresh()
        return row

    def update_milestone(
        self,
        milestone_id: int,
        *,
        name: str | None = None,
        criteria: dict[str, Any] | None = None,
        position: int | None = None,
        dry_run: bool = False,
    ) -> MilestoneRecord | dict[str, Any]:
        current = self.catalog.get_milestone(milestone_id)
        resolved = None if criteria is None else self.resolved(criteria)
        if position is not None:
            if current.remaining:
                raise JourneyRuleViolation("a remaining users split is always last; it cannot be moved")
            regular = sum(
                1
                for m in self.catalog.milestones(current.journey_id)
                if m.parent_id == current.parent_id and not m.remaining
            )
            if position >= regular:
                raise InvalidRequest(
                    f"position: {position} is out of range; there are {regular} milestones here (0-based)"
                )
        if dry_run:
            return self._dry_run(
                current.journey_id, lambda rows: whatif.with_edited(rows, milestone_id, resolved, position)
            )
        self._check(
            current.journey_id, lambda rows: whatif.with_edited(rows, milestone_id, resolved, position)
        )
        if name is not None or resolved is not None:
            self.catalog.update_milestone(milestone_id, name=name, criteria=resolved)
        if position is not None:
            siblings = [
                m
                for m in self.catalog.milestones(current.journey_id)
                if m.parent_id == current.parent_id and not m.remaining and m.id != milestone_id
            ]
            order = [m.id for m in siblings]
            order.insert(max(0, min(position, len(order))), milestone_id)
            self.catalog.reorder_milestones(current.journey_id, current.parent_id, order)
        self.refresh()
        return self.catalog.get_milestone(milestone_id)

    def edit_criteria(self, milestone_id: int, criteria: dict[str, Any]) -> None:
        self.update_milestone(milestone_id, criteria=criteria)

    def reorder(self, journey: int | str, parent_id: int | None, order: list[int]) -> None:
        self.catalog.reorder_milestones(journey, parent_id, order)
        self.refresh()

    def delete_milestone(self, milestone_id: int, dry_run: bool = False) -> dict[str, Any] | None:
        current = self.catalog.get_milestone(milestone_id)
        if dry_run:
            self.catalog.delete_milestone(milestone_id, check_only=True)  # refuses as the real call would
            return self._dry_run(current.journey_id, lambda rows: whatif.with_deleted(rows, milestone_id))
        self.catalog.delete_milestone(milestone_id)
        self.refresh()
        return None

    def _check(self, journey_id: int, change: Callable[[JourneyRows], JourneyRows]) -> None:
        """Refuse a change that would make audience references circular, before anything is stored."""
        journeys = [change(j) if j.id == journey_id else j for j in self.journeys()]
        for j in journeys:
            ids = {m.id for m in j.milestones}
            if any(m.parent_id is not None and m.parent_id not in ids for m in j.milestones):
                return  # a parent outside the journey: the catalog refuses it with the right message
        evaluation_order(g for j in journeys for g in sibling_groups(j))

    def _dry_run(self, journey_id: int, change: Callable[[JourneyRows], JourneyRows]) -> dict[str, Any]:
        """Per activated audience, how many users would enter and leave if `change` were made."""
        before = self.journeys()
        journeys = [change(j) if j.id == journey_id else j for j in before]
        result, _ = self.engine.what_if(journeys, self.calculated_attributes(), [])
        after = {m.audience_id for j in journeys for m in j.milestones}
        names = {m.audience_id: (j.name, m.name) for j in before for m in j.milestones}
        rows = []
        for a in sorted(self.activated()):
            if a not in names:
                continue
            enter, leave = result.per_audience.get(a, (0, 0))
            if a not in after:  # the change deletes it: every member leaves
                enter, leave = 0, self.engine.size(a)
            rows.append(
                {
                    "audience_id": a,
                    "journey": names[a][0],
                    "milestone": names[a][1],
                    "enter": enter,
                    "leave": leave,
                }
            )
        return {"dry_run": True, "activated_audiences": rows}

    # ---- the engine's view ---------------------------------------------------------------------

    def journeys(self) -> list[JourneyRows]:
        return [self.journey_rows(j) for j in self.catalog.list_journeys()]

    def journey_rows(self, journey: int | str | JourneyRecord) -> JourneyRows:
        """One journey as the engine sees it."""
        j = journey if isinstance(journey, JourneyRecord) else self.catalog.get_journey(journey)
        rows = tuple(
            MilestoneRow(
                m.id, m.journey_id, m.parent_id, m.position, m.name, m.audience_id, m.criteria, m.remaining
            )
            for m in self.catalog.milestones(j.id)
        )
        return JourneyRows(j.id, j.name, tuple(j.input_ids), rows)

    def calculated_attributes(self) -> dict[str, CalculatedAttribute]:
        return {
            c.name: parse_calculated_attribute(c.definition)
            for c in self.catalog.list_calculated_attributes()
        }

    def settings(self) -> EngineSettings:
        s = self.catalog.get_settings()
        return EngineSettings(s.lookback_days * DAY_MS, s.effective_profile_lifetime_days * DAY_MS)

    def activated(self) -> set[int]:
        return set(self.catalog.activated_audience_ids())

    def load(self) -> None:
        """At start-up: plan the engine; every calculated audience waits for one full calculation."""
        with self._lock:
            self.calculated = frozenset()
            self._recovering = True
            deferred, self.deferred = self.deferred, True
            try:
                self.refresh()
            finally:
                self.deferred = deferred

    def refresh(self) -> EvalResult:
        """Re-plan the engine from the catalog; audiences that became calculated get a first full calculation."""
        with self._lock:
            journeys = self.journeys()
            every = frozenset(m.audience_id for j in journeys for m in j.milestones)
            calculated = every if self.maintain_all else calculated_set(journeys, self.activated())
            fresh = calculated - self.calculated
            self.calculated = calculated
            self.pending = (self.pending & calculated) | set(fresh)
            self.engine.configure(
                journeys,
                self.calculated_attributes(),
                self.settings(),
                maintained=None if self.maintain_all else calculated,
            )
            self._cursor = None  # a calculation in parts starts again on the new plan
            if self.deferred:
                self.stale = True
                return EvalResult()
            return self.settle(force=True)

    @property
    def settling(self) -> bool:
        """A calculation is due or under way."""
        return bool(self.pending or self.stale)

    def settle(self, force: bool = False) -> EvalResult:
        """Run the full calculation that audiences still "calculating" wait for."""
        with self._lock:
            if not (self.pending or self.stale or force):
                return EvalResult()
            result = self.engine.full_calculation(self.now(), cause="calculation")
            self._done()
            return result

    def settle_part(self) -> EvalResult:
        """Advance the due calculation by one part of users (the evaluator thread's way: real time
        runs between parts); audiences stay "calculating" until the last part is done."""
        with self._lock:
            if not self.settling:
                return EvalResult()
            # In one go: on the calculator, or the recovery after start-up (nothing is settled
            # yet, so nothing waits on real time more than on the calculation).
            if self.engine.calculator is not None or self._recovering:
                return self.settle()
            started = time.monotonic()
            if self._cursor is None:
                # Users known now; those who arrive later are evaluated by real time on this plan.
                self._upto, users = self.engine.last_user()
                self._least = max(MIN_PART_USERS, -(-users // MAX_PARTS))
                self._part_users = max(self._part_users, self._least)
            result, last = self.engine.calculate_part(self._cursor, self._part_users, self._upto, self.now())
            if last is None:
                self._done()
                return result
            self._cursor = last
            took = max(time.monotonic() - started, 1e-3)
            scale = min(2.0, max(0.5, PART_S / took))
            self._part_users = min(MAX_PART_USERS, max(self._least, int(self._part_users * scale)))
            return result

    def _done(self) -> None:
        self.pending.clear()
        self.stale = False
        self._recovering = False
        self._cursor = None
