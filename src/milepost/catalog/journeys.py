"""Journeys (a name and the inputs they select) and account-level calculated attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from milepost.catalog import journey_rows as jr
from milepost.catalog import rows
from milepost.catalog.base import CatalogBase
from milepost.catalog.journey_records import CalculatedAttributeRecord, JourneyRecord
from milepost.catalog.tables import CalculatedAttributeRow, JourneyRow, MilestoneRow
from milepost.criteria import parse_calculated_attribute, parse_criteria, references
from milepost.criteria.document import calculated_attribute_json
from milepost.errors import Conflict, JourneyRuleViolation

RETRY = "the journey changed concurrently; try again"


class JourneysMixin(CatalogBase):
    """Journeys and calculated attributes; milestones are in `MilestonesMixin`."""

    # journeys

    def create_journey(self, name: str, input_ids: Sequence[int | str] | None = None) -> JourneyRecord:
        """A new journey with no milestones; `input_ids` (ids or names) None selects every input existing now."""
        name = rows.clean_name(name, "journey")
        conflict = _journey_name_taken(name)
        now = self._clock.now_ms()
        with self._transaction(conflict) as session:
            rows.ensure_name_free(session, JourneyRow, name, conflict)
            chosen = jr.all_input_ids(session) if input_ids is None else jr.select_inputs(session, input_ids)
            row = JourneyRow(name=name, name_key=rows.name_key(name), created_at=now, updated_at=now)
            session.add(row)
            session.flush()
            jr.replace_inputs(session, row.id, chosen)
            return jr.journey_record(session, row)

    def list_journeys(self) -> list[JourneyRecord]:
        with self._sessions() as session:
            return jr.journey_records(
                session, list(session.scalars(select(JourneyRow).order_by(JourneyRow.id)))
            )

    def get_journey(self, ref: int | str) -> JourneyRecord:
        with self._sessions() as session:
            return jr.journey_record(session, rows.find_journey(session, ref))

    def rename_journey(self, ref: int | str, name: str) -> JourneyRecord:
        name = rows.clean_name(name, "journey")
        conflict = _journey_name_taken(name)
        now = self._clock.now_ms()
        with self._transaction(conflict) as session:
            journey_id = rows.find_journey(session, ref).id
            jr.lock_journey(session, journey_id, now)
            row = rows.find_journey(session, journey_id)
            rows.ensure_name_free(session, JourneyRow, name, conflict, row.id)
            row.name, row.name_key = name, rows.name_key(name)
            session.flush()
            return jr.journey_record(session, row)

    def set_journey_inputs(self, ref: int | str, input_ids: Sequence[int | str]) -> JourneyRecord:
        """Replace the inputs a journey selects (ids or names, at least one)."""
        now = self._clock.now_ms()
        with self._transaction(RETRY) as session:
            journey_id = rows.find_journey(session, ref).id
            jr.lock_journey(session, journey_id, now)
            jr.replace_inputs(session, journey_id, jr.select_inputs(session, input_ids))
            return jr.journey_record(session, rows.find_journey(session, journey_id))

    def delete_journey(self, ref: int | str) -> None:
        """Delete a journey that has no milestones left."""
        with self._transaction(RETRY) as session:
            journey_id = rows.find_journey(session, ref).id
            jr.lock_journey(session, journey_id, self._clock.now_ms())
            row = rows.find_journey(session, journey_id)
            count = session.scalar(
                select(func.count()).select_from(MilestoneRow).where(MilestoneRow.journey_id == row.id)
            )
            if count:
                raise JourneyRuleViolation(
                    f"journey {row.name!r} still has milestones; delete them first, last to first"
                )
            jr.replace_inputs(session, row.id, [])
            session.delete(row)

    # calculated attributes

    def create_calculated_attribute(self, definition: dict[str, Any]) -> CalculatedAttributeRecord:
        """A new calculated attribute (SPEC §4.5), named by its definition; names are unique in any case."""
        parsed = parse_calculated_attribute(definition)
        name = rows.clean_name(parsed.name, "calculated attribute")
        canonical = {**calculated_attribute_json(parsed), "name": name}
        conflict = f"a calculated attribute named {name!r} already exists; choose another name"
        now = self._clock.now_ms()
        with self._transaction(conflict) as session:
            rows.ensure_name_free(session, CalculatedAttributeRow, name, conflict)
            row = CalculatedAttributeRow(
                name=name,
                name_key=rows.name_key(name),
                definition=jr.dump_json(canonical),
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return jr.calculated_attribute_record(row)

    def list_calculated_attributes(self) -> list[CalculatedAttributeRecord]:
        with self._sessions() as session:
            found = session.scalars(select(CalculatedAttributeRow).order_by(CalculatedAttributeRow.id))
            return [jr.calculated_attribute_record(row) for row in found]

    def get_calculated_attribute(self, ref: int | str) -> CalculatedAttributeRecord:
        with self._sessions() as session:
            return jr.calculated_attribute_record(rows.find_calculated_attribute(session, ref))

    def delete_calculated_attribute(self, ref: int | str) -> None:
        """Delete a calculated attribute that no milestone's criteria use."""
        with self._transaction("the calculated attribute changed concurrently; try again") as session:
            row = rows.find_calculated_attribute(session, ref)
            users = []
            query = (
                select(MilestoneRow.name, MilestoneRow.criteria, JourneyRow.name)
                .join(JourneyRow, JourneyRow.id == MilestoneRow.journey_id)
                .where(MilestoneRow.criteria.is_not(None))
                .order_by(JourneyRow.id, MilestoneRow.id)
            )
            for milestone, criteria, journey in session.execute(query).tuples():
                if row.name in references(parse_criteria(jr.load_json(criteria))).calculated_attributes:
                    users.append(f"milestone {milestone!r} in journey {journey!r}")
            if users:
                raise Conflict(
                    f"calculated attribute {row.name!r} is used by {'; '.join(users)}; "
                    "change or delete those milestones first"
                )
            session.delete(row)


def _journey_name_taken(name: str) -> str:
    return f"a journey named {name!r} already exists; choose another name"
