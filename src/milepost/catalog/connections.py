"""Connections from audiences to outputs, and the audience credits they consume (SPEC §2, §6).

An audience is activated while it has at least one active connection; each activated audience uses
one credit. Every change that may activate an audience takes the credit lock first, then checks
the limit on the result, so concurrent callers (threads or processes) can never exceed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from milepost.catalog import credits, rows
from milepost.catalog import output_rows as orow
from milepost.catalog.base import CatalogBase
from milepost.catalog.output_records import CONNECTION_STATUSES, HEALTHS, ON_DEACTIVATE, ConnectionRecord
from milepost.catalog.tables import ConnectionRow
from milepost.errors import Conflict, InvalidRequest

RETRY = "the connections changed concurrently; try again"

# (audience_id, output id or name, status, settings or None, on_deactivate)
PlannedCreate = tuple[int, int | str, str, dict[str, Any] | None, str]
# (connection_id, status)
PlannedUpdate = tuple[int, str]
_Create = tuple[int, int | str, str, dict[str, Any], str]

# Every stored column a connection's record is built from (`output_rows.connection_records`).
_TOKEN = (
    "SELECT c.id, c.audience_id, c.output_id, c.status, c.settings, c.on_deactivate, c.health, "
    "c.created_at, c.updated_at, o.name, o.type FROM connections c JOIN outputs o ON o.id = c.output_id "
    "ORDER BY c.id"
)


class ConnectionsMixin(CatalogBase):
    """Connections of audiences to outputs, and the account's audience credits."""

    def create_connection(
        self,
        audience_id: int,
        output_id: int | str,
        *,
        status: str = "active",
        settings: dict[str, Any] | None = None,
        on_deactivate: str = "keep",
    ) -> ConnectionRecord:
        """Connect an audience to an output (its id, or its name); an active connection activates
        the audience, which needs a free credit unless it is activated already (CreditLimitReached)."""
        planned = _checked_create((audience_id, output_id, status, settings, on_deactivate))
        with self._transaction(RETRY) as session:
            limit, before = _lock(session)
            row = self._add(session, *planned)
            credits.ensure_within_limit(session, limit, before, f"cannot activate audience {row.audience_id}")
            return orow.connection_record(session, row.id)

    def update_connection(
        self,
        connection_id: int,
        *,
        status: str | None = None,
        settings: dict[str, Any] | None = None,
        on_deactivate: str | None = None,
    ) -> ConnectionRecord:
        """Change a connection's status, settings (replaced as a whole) or on_deactivate; None
        leaves a field as it is. Setting the last active connection of an audience inactive
        deactivates it and frees its credit; the caller honours `on_deactivate`."""
        if status is not None:
            orow.clean_choice(status, CONNECTION_STATUSES, "status")
        if on_deactivate is not None:
            orow.clean_choice(on_deactivate, ON_DEACTIVATE, "on_deactivate")
        cleaned = None if settings is None else orow.clean_settings(settings, "connection")
        with self._transaction(RETRY) as session:
            limit, before = _lock(session)
            row = orow.find_connection(session, connection_id)
            changed = False
            if status is not None and status != row.status:
                row.status, changed = status, True
            if on_deactivate is not None and on_deactivate != row.on_deactivate:
                row.on_deactivate, changed = on_deactivate, True
            if cleaned is not None:
                orow.set_settings(row, cleaned)
                changed = True
            if changed:
                row.updated_at = self._clock.now_ms()
            session.flush()
            credits.ensure_within_limit(session, limit, before, f"cannot activate audience {row.audience_id}")
            return orow.connection_record(session, row.id)

    def set_connection_health(self, connection_id: int, health: str) -> ConnectionRecord:
        """Record a connection's delivery health (`ok`, `retrying`, `faulted`); its status and the
        audience's credit stay as they are."""
        orow.clean_choice(health, HEALTHS, "health")
        with self._transaction(RETRY) as session:
            row = orow.find_connection(session, connection_id)
            if row.health != health:
                row.health, row.updated_at = health, self._clock.now_ms()
            session.flush()
            return orow.connection_record(session, row.id)

    def delete_connection(self, connection_id: int) -> ConnectionRecord:
        """Delete a connection and return it as it was, so the caller can honour its on_deactivate."""
        with self._transaction(RETRY) as session:
            _lock(session)
            row = orow.find_connection(session, connection_id)
            record = orow.connection_record(session, row.id)
            session.delete(row)
            return record

    def get_connection(self, connection_id: int) -> ConnectionRecord:
        with self._sessions() as session:
            return orow.connection_record(session, orow.find_connection(session, connection_id).id)

    def connections_token(self) -> tuple[Any, ...]:
        """What `connections()` is built from, as stored: while it is equal, so are the connections.
        A plain query, far cheaper than building the records, for a reader that polls them."""
        with self._sessions() as session:
            return tuple(session.connection().exec_driver_sql(_TOKEN).fetchall())

    def connections(self, audience_id: int | None = None) -> list[ConnectionRecord]:
        """Every connection, or those of one audience, in id order.

        An audience that does not exist (perhaps deleted a moment ago) has none.
        """
        if audience_id is not None and not rows.valid_id(audience_id):
            raise InvalidRequest(f"an audience is referred to by its id (got {audience_id!r})")
        with self._sessions() as session:
            if audience_id is None:
                return orow.connection_records(session)
            return orow.connection_records(session, ConnectionRow.audience_id == audience_id)

    def activated_audience_ids(self) -> set[int]:
        """The audiences with at least one active connection."""
        with self._sessions() as session:
            return credits.activated_audience_ids(session)

    def activated_count(self) -> int:
        """How many audiences are activated, i.e. how many credits are in use."""
        with self._sessions() as session:
            return credits.activated_count(session)

    def apply_connection_plan(
        self, creates: Sequence[PlannedCreate], updates: Sequence[PlannedUpdate]
    ) -> list[ConnectionRecord]:
        """Create connections `(audience_id, output_id, status, settings, on_deactivate)` and set
        the status of others `(connection_id, status)` in one transaction, checked as a whole
        against the credit limit: either all of it happens or, refused, none of it. An output may
        be given by name, and settings None means none.

        Returns the created connections, then the updated ones, in the order given.
        """
        if not isinstance(creates, list | tuple) or not isinstance(updates, list | tuple):
            raise InvalidRequest("a connection plan is a list of connections to create and a list of updates")
        planned = [_checked_create(item) for item in creates]
        changes = [_checked_update(item) for item in updates]
        ids = [connection_id for connection_id, _ in changes]
        repeated = sorted({connection_id for connection_id in ids if ids.count(connection_id) > 1})
        if repeated:
            raise InvalidRequest(
                f"a connection plan may change each connection once; "
                f"{', '.join(map(str, repeated))} appear more than once"
            )
        now = self._clock.now_ms()
        with self._transaction(RETRY) as session:
            limit, before = _lock(session)
            touched = [self._add(session, *item) for item in planned]
            for connection_id, status in changes:
                row = orow.find_connection(session, connection_id)
                if row.status != status:
                    row.status, row.updated_at = status, now
                touched.append(row)
            session.flush()
            credits.ensure_within_limit(session, limit, before, "the connection plan cannot be applied")
            return [orow.connection_record(session, row.id) for row in touched]

    def _add(
        self,
        session: Session,
        audience_id: int,
        output_id: int | str,
        status: str,
        settings: dict[str, Any],
        on_deactivate: str,
    ) -> ConnectionRow:
        audience = orow.find_audience(session, audience_id)
        output = rows.find_output(session, output_id)
        existing = session.scalars(
            select(ConnectionRow.id).where(
                ConnectionRow.audience_id == audience.id, ConnectionRow.output_id == output.id
            )
        ).first()
        if existing is not None:
            raise Conflict(
                f"audience {audience.id} is already connected to output {output.name!r} "
                f"(connection {existing}); change that connection instead"
            )
        now = self._clock.now_ms()
        row = ConnectionRow(
            audience_id=audience.id,
            output_id=output.id,
            status=status,
            on_deactivate=on_deactivate,
            health="ok",
            created_at=now,
            updated_at=now,
        )
        orow.set_settings(row, settings)
        session.add(row)
        session.flush()
        return row


def _lock(session: Session) -> tuple[int, int]:
    """Take the credit lock; the account's limit and how many audiences are activated now."""
    settings = credits.lock_credits(session)
    return settings.audience_limit, credits.activated_count(session)


def _checked_create(item: object) -> _Create:
    if not isinstance(item, list | tuple) or len(item) != 5:
        raise InvalidRequest(
            "a planned connection is (audience_id, output_id, status, settings, on_deactivate) "
            f"(got {item!r})"
        )
    audience_id, output_id, status, settings, on_deactivate = item
    return (
        audience_id,
        output_id,
        orow.clean_choice(status, CONNECTION_STATUSES, "status"),
        orow.clean_settings({} if settings is None else settings, "connection"),
        orow.clean_choice(on_deactivate, ON_DEACTIVATE, "on_deactivate"),
    )


def _checked_update(item: object) -> PlannedUpdate:
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise InvalidRequest(f"a planned connection update is (connection_id, status) (got {item!r})")
    connection_id, status = item
    if not rows.valid_id(connection_id):
        raise InvalidRequest(f"a connection is referred to by its id (got {connection_id!r})")
    return connection_id, orow.clean_choice(status, CONNECTION_STATUSES, "status")
