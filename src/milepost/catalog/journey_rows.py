"""Finding, locking and converting journey, milestone and audience rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from milepost.catalog import rows
from milepost.catalog.journey_records import CalculatedAttributeRecord, JourneyRecord, MilestoneRecord
from milepost.catalog.tables import (
    AudienceRow,
    CalculatedAttributeRow,
    InputRow,
    JourneyInputRow,
    JourneyRow,
    MilestoneRow,
)
from milepost.errors import InvalidRequest, NotFound


def dump_json(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_json(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def lock_journey(session: Session, journey_id: int, now: int) -> None:
    """Serialise changes to one journey's tree until the transaction ends, and mark it updated.

    A write is the one lock that works alike on both databases: on PostgreSQL the UPDATE holds the
    journey's row lock; on SQLite it opens the write transaction, so every read after it is current.
    """
    done = session.execute(
        update(JourneyRow)
        .where(JourneyRow.id == journey_id)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 1) == 0:
        raise NotFound(f"there is no journey with id {journey_id}")
    session.expire_all()


def find_milestone(session: Session, milestone_id: object) -> MilestoneRow:
    row = session.get(MilestoneRow, milestone_id) if rows.valid_id(milestone_id) else None
    if row is None:
        if isinstance(milestone_id, int) and not isinstance(milestone_id, bool):
            raise NotFound(f"there is no milestone with id {milestone_id}")
        raise InvalidRequest(f"a milestone is referred to by its id (got {milestone_id!r})")
    return row


def locked_milestone(session: Session, milestone_id: object, now: int) -> MilestoneRow:
    """The milestone, read again once its journey is locked so its position is current."""
    journey_id = find_milestone(session, milestone_id).journey_id
    lock_journey(session, journey_id, now)
    return find_milestone(session, milestone_id)


def children(session: Session, journey_id: int, parent_id: int | None) -> list[MilestoneRow]:
    """The milestones directly under `parent_id` (None: the root), in order."""
    parent = MilestoneRow.parent_id.is_(None) if parent_id is None else MilestoneRow.parent_id == parent_id
    query = select(MilestoneRow).where(MilestoneRow.journey_id == journey_id, parent)
    return list(session.scalars(query.order_by(MilestoneRow.position, MilestoneRow.id)))


def find_parent(session: Session, journey: JourneyRow, parent_id: object) -> MilestoneRow | None:
    """The milestone `parent_id` of this journey, or None for the root."""
    if parent_id is None:
        return None
    if not (isinstance(parent_id, int) and not isinstance(parent_id, bool)):
        raise InvalidRequest(f"parent_id must be a milestone id or null for the root (got {parent_id!r})")
    parent = session.get(MilestoneRow, parent_id) if rows.valid_id(parent_id) else None
    if parent is None:
        raise NotFound(f"there is no milestone with id {parent_id} to be the parent")
    if parent.journey_id != journey.id:
        raise InvalidRequest(
            f"milestone {parent.name!r} (id {parent_id}) belongs to another journey; "
            f"a parent must be a milestone of journey {journey.name!r}"
        )
    return parent


def place(parent: MilestoneRow | None, journey: JourneyRow) -> str:
    """Where children of `parent` sit, for messages."""
    if parent is None:
        return f"the root of journey {journey.name!r}"
    return f"milestone {parent.name!r}"


def quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def journey_inputs(session: Session, journey_ids: list[int]) -> dict[int, tuple[int, ...]]:
    """The selected input ids of each journey, ascending."""
    found: dict[int, list[int]] = {journey_id: [] for journey_id in journey_ids}
    if journey_ids:
        query = (
            select(JourneyInputRow.journey_id, JourneyInputRow.input_id)
            .where(JourneyInputRow.journey_id.in_(journey_ids))
            .order_by(JourneyInputRow.input_id)
        )
        for journey_id, input_id in session.execute(query):
            found[journey_id].append(input_id)
    return {journey_id: tuple(ids) for journey_id, ids in found.items()}


def journey_record(session: Session, row: JourneyRow) -> JourneyRecord:
    return journey_records(session, [row])[0]


def journey_records(session: Session, found: list[JourneyRow]) -> list[JourneyRecord]:
    inputs = journey_inputs(session, [row.id for row in found])
    return [
        JourneyRecord(
            id=row.id,
            name=row.name,
            input_ids=inputs[row.id],
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in found
    ]


def select_inputs(session: Session, input_ids: object) -> list[int]:
    """The ids of these inputs (ids or names), each once, or InvalidRequest / NotFound."""
    if not isinstance(input_ids, list | tuple):
        raise InvalidRequest(f"inputs must be a list of input ids (got {input_ids!r})")
    if not input_ids:
        raise InvalidRequest("a journey needs at least one input; select the inputs whose users it follows")
    chosen: list[int] = []
    for ref in input_ids:
        input_id = rows.find_input(session, ref).id
        if input_id not in chosen:
            chosen.append(input_id)
    return sorted(chosen)


def all_input_ids(session: Session) -> list[int]:
    return list(session.scalars(select(InputRow.id).order_by(InputRow.id)))


def replace_inputs(session: Session, journey_id: int, input_ids: list[int]) -> None:
    session.execute(delete(JourneyInputRow).where(JourneyInputRow.journey_id == journey_id))
    session.add_all(JourneyInputRow(journey_id=journey_id, input_id=input_id) for input_id in input_ids)
    session.flush()


def journeys_selecting(session: Session, input_id: int) -> list[str]:
    """The names of the journeys that select an input."""
    query = (
        select(JourneyRow.name)
        .join(JourneyInputRow, JourneyInputRow.journey_id == JourneyRow.id)
        .where(JourneyInputRow.input_id == input_id)
        .order_by(JourneyRow.id)
    )
    return list(session.scalars(query))


def default_external_name(journey_name: str, milestone_name: str) -> str:
    return f"{journey_name} – {milestone_name}"


def milestone_records(session: Session, where: ColumnElement[bool]) -> list[MilestoneRecord]:
    """Records of the milestones matching `where`, ordered by parent (root first) and position."""
    query = (
        select(MilestoneRow, AudienceRow, JourneyRow.name)
        .join(AudienceRow, AudienceRow.milestone_id == MilestoneRow.id)
        .join(JourneyRow, JourneyRow.id == MilestoneRow.journey_id)
        .where(where)
    )
    found = [
        MilestoneRecord(
            id=row.id,
            journey_id=row.journey_id,
            parent_id=row.parent_id,
            position=row.position,
            name=row.name,
            criteria=load_json(row.criteria),
            remaining=row.remaining,
            audience_id=audience.id,
            external_name=audience.external_name or default_external_name(journey_name, row.name),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row, audience, journey_name in session.execute(query).tuples()
    ]
    found.sort(key=lambda m: (m.journey_id, m.parent_id is not None, m.parent_id or 0, m.position, m.id))
    return found


def milestone_record(session: Session, milestone_id: int) -> MilestoneRecord:
    found = milestone_records(session, MilestoneRow.id == milestone_id)
    if not found:
        raise NotFound(f"there is no milestone with id {milestone_id}")
    return found[0]


def calculated_attribute_record(row: CalculatedAttributeRow) -> CalculatedAttributeRecord:
    definition = load_json(row.definition)
    assert definition is not None
    return CalculatedAttributeRecord(
        id=row.id, name=row.name, definition=definition, created_at=row.created_at, updated_at=row.updated_at
    )
