"""Outputs: configured partners (file, webhook, Firehose, Braze) that audiences connect to (SPEC §6)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from milepost.catalog import credits, rows
from milepost.catalog import output_rows as orow
from milepost.catalog.base import CatalogBase
from milepost.catalog.output_records import OutputRecord
from milepost.catalog.tables import ConnectionRow, OutputRow
from milepost.errors import Conflict

RETRY = "the output changed concurrently; try again"


class OutputsMixin(CatalogBase):
    """Outputs, named uniquely in any case; one cannot be deleted while audiences are connected to it."""

    def create_output(
        self,
        type: str,
        name: str,
        settings: dict[str, Any],
        *,
        accepted_identities: list[str] | None = None,
        hashing: str | None = None,
    ) -> OutputRecord:
        """A new output. `accepted_identities` None means the type's default; `hashing` None sends
        identities as they are. Settings are kept as given (no type-specific checks yet)."""
        kind = orow.clean_type(type)
        name = rows.clean_name(name, "output")
        cleaned = orow.clean_settings(settings, "output")
        identities = orow.clean_identities(accepted_identities)
        hashed = orow.clean_hashing(hashing)
        conflict = _name_taken(name)
        now = self._clock.now_ms()
        with self._transaction(conflict) as session:
            rows.ensure_name_free(session, OutputRow, name, conflict)
            row = OutputRow(
                type=kind,
                name=name,
                name_key=rows.name_key(name),
                accepted_identities=orow.stored_identities(identities),
                hashing=hashed,
                created_at=now,
                updated_at=now,
            )
            orow.set_settings(row, cleaned)
            session.add(row)
            session.flush()
            return orow.output_record(row)

    def list_outputs(self) -> list[OutputRecord]:
        with self._sessions() as session:
            found = session.scalars(select(OutputRow).order_by(OutputRow.id))
            return [orow.output_record(row) for row in found]

    def get_output(self, ref: int | str) -> OutputRecord:
        """The output with this id or name (any case), or NotFound."""
        with self._sessions() as session:
            return orow.output_record(rows.find_output(session, ref))

    def update_output(
        self, ref: int | str, *, name: str | None = None, settings: dict[str, Any] | None = None
    ) -> OutputRecord:
        """Rename an output and/or replace its settings as a whole; None leaves a field as it is."""
        if name is not None:
            name = rows.clean_name(name, "output")
        cleaned = None if settings is None else orow.clean_settings(settings, "output")
        with self._transaction(RETRY if name is None else _name_taken(name)) as session:
            row = rows.find_output(session, ref)
            if name is not None:
                rows.ensure_name_free(session, OutputRow, name, _name_taken(name), row.id)
                row.name, row.name_key = name, rows.name_key(name)
            if cleaned is not None:
                orow.set_settings(row, cleaned)
            if name is not None or cleaned is not None:
                row.updated_at = self._clock.now_ms()
            session.flush()
            return orow.output_record(row)

    def delete_output(self, ref: int | str) -> None:
        """Delete an output that no audience is connected to."""
        # connections.output_id is RESTRICT: a connection made concurrently also ends as Conflict.
        with self._transaction(RETRY) as session:
            credits.lock_credits(session)
            row = rows.find_output(session, ref)
            audience_ids = list(
                session.scalars(
                    select(ConnectionRow.audience_id)
                    .where(ConnectionRow.output_id == row.id)
                    .order_by(ConnectionRow.audience_id)
                )
            )
            if audience_ids:
                names = orow.audience_names(session, audience_ids)
                many = len(audience_ids) > 1
                listed = ", ".join(f"{a} ({names.get(a, '?')!r})" for a in audience_ids)
                raise Conflict(
                    f"output {row.name!r} still has {len(audience_ids)} connection{'s' if many else ''}, "
                    f"to audience{'s' if many else ''} {listed}; delete "
                    f"{'those connections' if many else 'that connection'} first"
                )
            session.delete(row)


def _name_taken(name: str) -> str:
    return f"an output named {name!r} already exists; output names are unique in the account"
