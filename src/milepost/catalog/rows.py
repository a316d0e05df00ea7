"""Finding catalog rows by id or name, checking names, and turning rows into records."""

from __future__ import annotations

import unicodedata
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from milepost.catalog.records import AccountSettings, ApiToken, Input, Workspace
from milepost.catalog.tables import (
    NAME_LENGTH,
    AccountSettingsRow,
    ApiTokenRow,
    CalculatedAttributeRow,
    InputRow,
    JourneyRow,
    OutputRow,
    WorkspaceRow,
)
from milepost.errors import Conflict, InvalidRequest, NotFound

# Ids are 32-bit integers on PostgreSQL; a larger one can only be a miss.
_MAX_ID = 2**31 - 1

Named = TypeVar("Named", WorkspaceRow, InputRow, JourneyRow, CalculatedAttributeRow, OutputRow)


def clean_name(value: object, what: str) -> str:
    """A name stripped of surrounding space, or InvalidRequest saying what is wrong with it."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{_a(what)} name must be a string (got {type(value).__name__})")
    name = value.strip()
    if not name:
        raise InvalidRequest(f"{_a(what)} name cannot be empty")
    if len(name) > NAME_LENGTH:
        raise InvalidRequest(
            f"{_a(what)} name can be at most {NAME_LENGTH} characters long (got {len(name)})"
        )
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise InvalidRequest(f"{_a(what)} name cannot contain control characters such as newlines or tabs")
    return name


def _a(what: str) -> str:
    """`what` with its indefinite article, for messages."""
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def name_key(name: str) -> str:
    """The case-insensitive form under which names are unique."""
    return name.casefold()


def find_workspace(session: Session, ref: int | str) -> WorkspaceRow:
    """The workspace with this id or name, or NotFound."""
    return _find(session, WorkspaceRow, ref, "workspace")


def find_input(session: Session, ref: int | str) -> InputRow:
    """The input with this id or name, or NotFound."""
    return _find(session, InputRow, ref, "input")


def find_journey(session: Session, ref: int | str) -> JourneyRow:
    """The journey with this id or name, or NotFound."""
    return _find(session, JourneyRow, ref, "journey")


def find_calculated_attribute(session: Session, ref: int | str) -> CalculatedAttributeRow:
    """The calculated attribute with this id or name, or NotFound."""
    return _find(session, CalculatedAttributeRow, ref, "calculated attribute")


def find_output(session: Session, ref: int | str) -> OutputRow:
    """The output with this id or name, or NotFound."""
    return _find(session, OutputRow, ref, "output")


def valid_id(value: object) -> bool:
    """Whether `value` can be the id of a row (a positive 32-bit integer, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_ID


def _find(session: Session, table: type[Named], ref: int | str, what: str) -> Named:
    # A name is tried first; a string of digits that names nothing is read as an id, as in URL paths.
    if isinstance(ref, str):
        stripped = ref.strip()
        row = session.scalars(select(table).where(table.name_key == name_key(stripped))).one_or_none()
        if row is not None:
            return row
        if not (stripped.isascii() and stripped.isdigit()):
            raise NotFound(f"there is no {what} named {stripped!r}; list the {what}s to see their names")
        ref = int(stripped)
    elif isinstance(ref, bool) or not isinstance(ref, int):
        raise InvalidRequest(f"{_a(what)} is referred to by its id or name (got {ref!r})")
    found = session.get(table, ref) if 1 <= ref <= _MAX_ID else None
    if found is None:
        raise NotFound(f"there is no {what} with id {ref}")
    return found


def ensure_name_free(
    session: Session, table: type[Named], name: str, conflict: str, own_id: int | None = None
) -> None:
    """Raise Conflict(conflict) if another row of `table` already has this name, in any case."""
    query = select(func.count()).select_from(table).where(table.name_key == name_key(name))
    if own_id is not None:
        query = query.where(table.id != own_id)
    if session.scalar(query):
        raise Conflict(conflict)


def workspace_record(row: WorkspaceRow) -> Workspace:
    return Workspace(id=row.id, name=row.name, created_at=row.created_at)


def input_record(row: InputRow) -> Input:
    return Input(
        id=row.id,
        workspace_id=row.workspace_id,
        workspace_name=row.workspace.name,
        name=row.name,
        platform=row.platform,
        kind="feed" if row.platform == "feed" else "platform",
        key=row.key,
        enabled=row.enabled,
        created_at=row.created_at,
        secret_rotated_at=row.secret_rotated_at,
    )


def settings_record(row: AccountSettingsRow) -> AccountSettings:
    return AccountSettings(
        audience_limit=row.audience_limit,
        lookback_days=row.lookback_days,
        profile_lifetime_days=row.profile_lifetime_days,
        retention_days=row.retention_days,
        request_dedupe_days=row.request_dedupe_days,
        message_dedupe_days=row.message_dedupe_days,
    )


def token_record(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        scope=row.scope,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
