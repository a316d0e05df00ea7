"""Milestones and their audiences: the journey tree's rules (SPEC §2) kept in the catalog."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from milepost.catalog import journey_rows as jr
from milepost.catalog import rows
from milepost.catalog.base import CatalogBase
from milepost.catalog.journey_records import MilestoneRecord
from milepost.catalog.tables import (
    EXTERNAL_NAME_LENGTH,
    AudienceReferenceRow,
    AudienceRow,
    CalculatedAttributeRow,
    JourneyRow,
    MilestoneRow,
)
from milepost.criteria import parse_criteria, references, resolve_audiences, to_json
from milepost.errors import Conflict, InvalidRequest, JourneyRuleViolation, NotFound

RETRY = "the journey changed concurrently; try again"


class MilestonesMixin(CatalogBase):
    """Milestones of journeys, each owning one audience whose id is never reused."""

    def add_milestone(
        self,
        journey: int | str,
        *,
        parent_id: int | None,
        name: str,
        criteria: dict[str, Any] | None = None,
        remaining: bool = False,
        position: int | None = None,
    ) -> MilestoneRecord:
        """A new milestone (or remaining users split) under `parent_id` (None: the root).

        `position` is 0-based among the parent's children; None places a milestone last, before
        any remaining users split.
        """
        name = rows.clean_name(name, "milestone")
        if not isinstance(remaining, bool):
            raise InvalidRequest(f"remaining must be true or false (got {remaining!r})")
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or position < 0
        ):
            raise InvalidRequest(f"position must be a whole number, 0 or more (got {position!r})")
        if remaining and criteria is not None:
            raise JourneyRuleViolation(
                f"remaining users split {name!r} cannot have criteria: it holds everyone in its parent "
                "who matched none of its siblings; leave criteria out"
            )
        if not remaining and criteria is None:
            raise InvalidRequest(f"milestone {name!r} needs criteria; only a remaining users split has none")
        now = self._clock.now_ms()
        with self._transaction(_name_taken(name)) as session:
            owner = rows.find_journey(session, journey)
            jr.lock_journey(session, owner.id, now)
            parent = jr.find_parent(session, owner, parent_id)
            _ensure_name_free(session, owner.id, name)
            stored, audience_ids = (None, set()) if criteria is None else _checked_criteria(session, criteria)
            siblings = jr.children(session, owner.id, parent_id)
            split = next((s for s in siblings if s.remaining), None)
            regular = len(siblings) - (split is not None)
            where = jr.place(parent, owner)
            if remaining:
                if split is not None:
                    raise JourneyRuleViolation(
                        f"{where} already has the remaining users split {split.name!r}; "
                        "a parent has at most one"
                    )
                if regular == 0:
                    raise JourneyRuleViolation(
                        f"{where} has no milestone yet; add a milestone before its remaining users split"
                    )
                if position is not None and position != regular:
                    raise JourneyRuleViolation(
                        f"a remaining users split is always last: its position under {where} is {regular}"
                    )
                at = regular
            else:
                at = regular if position is None else position
                if at > regular:
                    if split is not None:
                        raise JourneyRuleViolation(
                            f"position {at} would place {name!r} after the remaining users split "
                            f"{split.name!r}, which is always last; choose a position from 0 to {regular}"
                        )
                    raise InvalidRequest(f"position under {where} must be from 0 to {regular} (got {at})")
            for sibling in siblings:
                if sibling.position >= at:
                    sibling.position += 1
            row = MilestoneRow(
                journey_id=owner.id,
                parent_id=parent_id,
                position=at,
                name=name,
                name_key=rows.name_key(name),
                criteria=stored,
                remaining=remaining,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            session.add(AudienceRow(milestone_id=row.id, external_name=None, created_at=now))
            _set_references(session, row.id, audience_ids)
            return jr.milestone_record(session, row.id)

    def update_milestone(
        self, milestone_id: int, *, name: str | None = None, criteria: dict[str, Any] | None = None
    ) -> MilestoneRecord:
        """Rename a milestone and/or replace its criteria; None leaves a field as it is."""
        if name is not None:
            name = rows.clean_name(name, "milestone")
        now = self._clock.now_ms()
        with self._transaction(RETRY if name is None else _name_taken(name)) as session:
            row = jr.locked_milestone(session, milestone_id, now)
            if criteria is not None:
                if row.remaining:
                    raise JourneyRuleViolation(
                        f"the criteria of remaining users split {row.name!r} cannot be edited: it holds "
                        "everyone in its parent who matched none of its siblings; edit the siblings instead"
                    )
                stored, audience_ids = _checked_criteria(session, criteria)
                row.criteria = stored
                _set_references(session, row.id, audience_ids)
            if name is not None:
                _ensure_name_free(session, row.journey_id, name, row.id)
                row.name, row.name_key = name, rows.name_key(name)
            if name is not None or criteria is not None:
                row.updated_at = now
            session.flush()
            return jr.milestone_record(session, row.id)

    def set_external_name(self, milestone_id: int, external_name: str | None) -> MilestoneRecord:
        """Set the name partners see for a milestone's audience; None restores the default."""
        if external_name is not None:
            external_name = rows.clean_name(external_name, "external")
            if len(external_name) > EXTERNAL_NAME_LENGTH:
                raise InvalidRequest(
                    f"an external name can be at most {EXTERNAL_NAME_LENGTH} characters long "
                    f"(got {len(external_name)})"
                )
        with self._transaction(RETRY) as session:
            row = jr.locked_milestone(session, milestone_id, self._clock.now_ms())
            audience = session.scalars(select(AudienceRow).where(AudienceRow.milestone_id == row.id)).one()
            audience.external_name = external_name
            session.flush()
            return jr.milestone_record(session, row.id)

    def reorder_milestones(
        self, journey: int | str, parent_id: int | None, order: list[int]
    ) -> list[MilestoneRecord]:
        """Put the milestones under `parent_id` in this order (their ids); a remaining split stays last.

        Returns every child of the parent in its new order.
        """
        if not isinstance(order, list | tuple) or not all(rows.valid_id(item) for item in order):
            raise InvalidRequest(f"order must be a list of milestone ids (got {order!r})")
        now = self._clock.now_ms()
        with self._transaction(RETRY) as session:
            owner = rows.find_journey(session, journey)
            jr.lock_journey(session, owner.id, now)
            parent = jr.find_parent(session, owner, parent_id)
            siblings = jr.children(session, owner.id, parent_id)
            split = next((s for s in siblings if s.remaining), None)
            regular = {s.id: s for s in siblings if not s.remaining}
            where = jr.place(parent, owner)
            if split is not None and split.id in order:
                raise JourneyRuleViolation(
                    f"remaining users split {split.name!r} cannot be reordered: it is always last; "
                    "list only the other milestones"
                )
            if len(set(order)) != len(order) or set(order) != set(regular):
                expected = ", ".join(str(s.id) for s in siblings if not s.remaining) or "none"
                raise InvalidRequest(
                    f"order must list each milestone under {where} exactly once (ids {expected}); "
                    f"got {list(order)}"
                )
            for at, milestone_id in enumerate(order):
                moved = regular[milestone_id]
                if moved.position != at:
                    moved.position, moved.updated_at = at, now
            if split is not None:
                split.position = len(order)
            session.flush()
            parent_match = (
                MilestoneRow.parent_id.is_(None) if parent_id is None else MilestoneRow.parent_id == parent_id
            )
            return jr.milestone_records(session, (MilestoneRow.journey_id == owner.id) & parent_match)

    def delete_milestone(self, milestone_id: int, *, check_only: bool = False) -> None:
        """Delete a milestone and its audience, unless a rule of SPEC §2 refuses it.

        With `check_only`, apply the rules and change nothing (a dry run refuses as the real call would).
        """
        with contextlib.suppress(_RolledBack):
            self._delete_milestone(milestone_id, check_only)

    def _delete_milestone(self, milestone_id: int, check_only: bool) -> None:
        with self._transaction(RETRY) as session:
            row = jr.locked_milestone(session, milestone_id, self._clock.now_ms())
            what = "remaining users split" if row.remaining else "milestone"
            refused = f"cannot delete {what} {row.name!r}"
            below = jr.children(session, row.journey_id, row.id)
            if below:
                raise JourneyRuleViolation(
                    f"{refused}: {len(below)} milestone{'s' if len(below) > 1 else ''} "
                    f"({jr.quoted(m.name for m in below)}) hang below it; delete them first, last to first"
                )
            siblings = jr.children(session, row.journey_id, row.parent_id)
            later = sorted((s for s in siblings if s.position > row.position), key=lambda s: -s.position)
            if later:  # milestones are removed from last to first (a remaining split is always last)
                last = later[0]
                kind = "the remaining users split" if last.remaining else "milestone"
                raise JourneyRuleViolation(
                    f"{refused}: milestones are removed from last to first; delete {kind} {last.name!r} first"
                )
            audience = session.scalars(select(AudienceRow).where(AudienceRow.milestone_id == row.id)).one()
            users = session.execute(
                select(MilestoneRow.name, JourneyRow.name)
                .join(AudienceReferenceRow, AudienceReferenceRow.milestone_id == MilestoneRow.id)
                .join(JourneyRow, JourneyRow.id == MilestoneRow.journey_id)
                .where(AudienceReferenceRow.audience_id == audience.id, MilestoneRow.id != row.id)
                .order_by(JourneyRow.id, MilestoneRow.id)
            ).all()
            if users:
                listed = "; ".join(f"milestone {m!r} in journey {j!r}" for m, j in users)
                raise JourneyRuleViolation(
                    f"{refused}: {listed} {'refers' if len(users) == 1 else 'refer'} to its audience "
                    f"({audience.id}); remove {'that reference' if len(users) == 1 else 'those references'} first"
                )
            if check_only:
                raise _RolledBack
            session.execute(delete(AudienceReferenceRow).where(AudienceReferenceRow.milestone_id == row.id))
            session.delete(audience)
            session.flush()
            session.delete(row)
            for sibling in siblings:
                if sibling.position > row.position:
                    sibling.position -= 1

    def milestones(self, journey: int | str) -> list[MilestoneRecord]:
        """Every milestone of a journey, ordered by parent (the root first) and position."""
        with self._sessions() as session:
            owner = rows.find_journey(session, journey)
            return jr.milestone_records(session, MilestoneRow.journey_id == owner.id)

    def get_milestone(self, milestone_id: int) -> MilestoneRecord:
        with self._sessions() as session:
            return jr.milestone_record(session, jr.find_milestone(session, milestone_id).id)

    def milestone_by_audience(self, audience_id: int) -> MilestoneRecord:
        """The milestone owning an audience, or NotFound."""
        with self._sessions() as session:
            audience = session.get(AudienceRow, audience_id) if rows.valid_id(audience_id) else None
            if audience is None:
                raise NotFound(f"there is no audience with id {audience_id}")
            return jr.milestone_record(session, audience.milestone_id)

    def names_by_audience(self) -> dict[int, tuple[str, str]]:
        """Every audience's milestone name and external name, in one query (a record per audience
        would cost a query each)."""
        with self._sessions() as session:
            query = (
                select(AudienceRow.id, MilestoneRow.name, AudienceRow.external_name, JourneyRow.name)
                .join(MilestoneRow, AudienceRow.milestone_id == MilestoneRow.id)
                .join(JourneyRow, JourneyRow.id == MilestoneRow.journey_id)
            )
            return {
                int(audience_id): (name, external or jr.default_external_name(journey_name, name))
                for audience_id, name, external, journey_name in session.execute(query).tuples()
            }

    def find_audience(self, journey_name: str, milestone_name: str) -> int:
        """The audience id of a milestone named by its journey's name and its own (any case)."""
        with self._sessions() as session:
            return _find_audience(session, journey_name, milestone_name)


def _name_taken(name: str) -> str:
    return (
        f"a milestone named {name!r} already exists in this journey; milestone names are unique in a journey"
    )


def _ensure_name_free(session: Session, journey_id: int, name: str, own_id: int | None = None) -> None:
    query = select(MilestoneRow.id).where(
        MilestoneRow.journey_id == journey_id, MilestoneRow.name_key == rows.name_key(name)
    )
    if own_id is not None:
        query = query.where(MilestoneRow.id != own_id)
    if session.scalars(query).first() is not None:
        raise Conflict(_name_taken(name))


def _find_audience(session: Session, journey_name: object, milestone_name: object) -> int:
    if not isinstance(journey_name, str) or not isinstance(milestone_name, str):
        raise InvalidRequest("an audience is named by its journey's name and its milestone's name")
    journey = session.scalars(
        select(JourneyRow).where(JourneyRow.name_key == rows.name_key(journey_name.strip()))
    ).one_or_none()
    if journey is None:
        raise NotFound(
            f"there is no journey named {journey_name.strip()!r} (looking for its milestone "
            f"{milestone_name.strip()!r})"
        )
    audience_id = session.scalars(
        select(AudienceRow.id)
        .join(MilestoneRow, MilestoneRow.id == AudienceRow.milestone_id)
        .where(
            MilestoneRow.journey_id == journey.id,
            MilestoneRow.name_key == rows.name_key(milestone_name.strip()),
        )
    ).one_or_none()
    if audience_id is None:
        raise NotFound(f"there is no milestone named {milestone_name.strip()!r} in journey {journey.name!r}")
    return audience_id


class _RolledBack(Exception):
    """Leaves a transaction without committing it (a rules check that changes nothing)."""


def _checked_criteria(session: Session, criteria: object) -> tuple[str, set[int]]:
    """The canonical JSON text of valid criteria and the audience ids they refer to.

    Audience leaves naming a journey and milestone are stored by audience id; every audience and
    calculated attribute referred to must exist.
    """
    parsed = resolve_audiences(
        parse_criteria(criteria), lambda journey, milestone: _find_audience(session, journey, milestone)
    )
    found = references(parsed)
    audience_ids = set(found.audience_ids)
    if audience_ids:
        valid = {a for a in audience_ids if rows.valid_id(a)}  # larger ids exist nowhere (and overflow SQL)
        known = (
            set(session.scalars(select(AudienceRow.id).where(AudienceRow.id.in_(valid)))) if valid else set()
        )
        missing = sorted(audience_ids - known)
        if missing:
            raise NotFound(
                f"the criteria refer to audience{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))}, which {'do' if len(missing) > 1 else 'does'} not exist"
            )
    if found.calculated_attributes:
        names = set(found.calculated_attributes)
        known_names = set(
            session.scalars(select(CalculatedAttributeRow.name).where(CalculatedAttributeRow.name.in_(names)))
        )
        missing_names = sorted(names - known_names)
        if missing_names:
            raise NotFound(
                f"the criteria use calculated attribute{'s' if len(missing_names) > 1 else ''} "
                f"{jr.quoted(missing_names)}, which {'do' if len(missing_names) > 1 else 'does'} not exist; "
                f"create {'them' if len(missing_names) > 1 else 'it'} first"
            )
    return jr.dump_json(to_json(parsed)), audience_ids


def _set_references(session: Session, milestone_id: int, audience_ids: set[int]) -> None:
    session.execute(delete(AudienceReferenceRow).where(AudienceReferenceRow.milestone_id == milestone_id))
    session.add_all(
        AudienceReferenceRow(milestone_id=milestone_id, audience_id=audience_id)
        for audience_id in sorted(audience_ids)
    )
    session.flush()
