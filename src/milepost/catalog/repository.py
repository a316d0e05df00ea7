"""The Catalog: the control plane's one entry point for workspaces, inputs, settings, tokens,
journeys with their milestones and audiences, calculated attributes, outputs and connections."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import select
from sqlalchemy.orm import joinedload, sessionmaker

from milepost.catalog import credits, rows
from milepost.catalog import secrets as secretgen
from milepost.catalog.connections import ConnectionsMixin
from milepost.catalog.credits import SETTINGS_ID
from milepost.catalog.database import open_engine, upgrade_to_head
from milepost.catalog.journey_rows import journeys_selecting
from milepost.catalog.journeys import JourneysMixin
from milepost.catalog.milestones import MilestonesMixin
from milepost.catalog.outputs import OutputsMixin
from milepost.catalog.records import PLATFORMS, SCOPES, AccountSettings, ApiToken, Input, Workspace
from milepost.catalog.settings import apply_changes
from milepost.catalog.tables import AccountSettingsRow, ApiTokenRow, InputRow, WorkspaceRow
from milepost.clock import Clock, SystemClock
from milepost.errors import Conflict, InvalidRequest, NotFound

# Recording every use of a token would turn each API read into a write; once a minute is enough.
TOKEN_USE_RESOLUTION_MS = 60_000


class Catalog(JourneysMixin, MilestonesMixin, OutputsMixin, ConnectionsMixin):
    """Workspaces, inputs, account settings, API tokens, journeys, milestones, audiences,
    calculated attributes, outputs and connections in a SQLite or PostgreSQL database.

    Opening a catalog applies any pending migrations. Every method runs in its own transaction
    and returns frozen records, never ORM objects.
    """

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._engine = open_engine(url)
        try:
            upgrade_to_head(self._engine)
        except BaseException:
            self._engine.dispose()
            raise
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # workspaces

    def create_workspace(self, name: str) -> Workspace:
        name = rows.clean_name(name, "workspace")
        conflict = f"a workspace named {name!r} already exists; choose another name"
        with self._transaction(conflict) as session:
            rows.ensure_name_free(session, WorkspaceRow, name, conflict)
            row = WorkspaceRow(name=name, name_key=rows.name_key(name), created_at=self._clock.now_ms())
            session.add(row)
            session.flush()
            return rows.workspace_record(row)

    def list_workspaces(self) -> list[Workspace]:
        with self._sessions() as session:
            found = session.scalars(select(WorkspaceRow).order_by(WorkspaceRow.id))
            return [rows.workspace_record(row) for row in found]

    def get_workspace(self, ref: int | str) -> Workspace:
        with self._sessions() as session:
            return rows.workspace_record(rows.find_workspace(session, ref))

    def rename_workspace(self, ref: int | str, name: str) -> Workspace:
        name = rows.clean_name(name, "workspace")
        conflict = f"a workspace named {name!r} already exists; choose another name"
        with self._transaction(conflict) as session:
            row = rows.find_workspace(session, ref)
            rows.ensure_name_free(session, WorkspaceRow, name, conflict, row.id)
            row.name, row.name_key = name, rows.name_key(name)
            return rows.workspace_record(row)

    def delete_workspace(self, ref: int | str) -> None:
        with self._transaction("the workspace is still in use and cannot be deleted") as session:
            row = rows.find_workspace(session, ref)
            names = session.scalars(
                select(InputRow.name).where(InputRow.workspace_id == row.id).order_by(InputRow.id)
            ).all()
            if names:
                listed = ", ".join(repr(name) for name in names)
                raise Conflict(
                    f"workspace {row.name!r} still has {len(names)} input{'s' if len(names) > 1 else ''} "
                    f"({listed}); delete them before deleting the workspace"
                )
            session.delete(row)

    # inputs

    def create_input(self, workspace: int | str, name: str, platform: str) -> tuple[Input, str]:
        """A new enabled input and its plaintext secret, which is not stored and cannot be shown again."""
        name = rows.clean_name(name, "input")
        platform = _clean_platform(platform)
        conflict = f"an input named {name!r} already exists; input names are unique in the account"
        secret = secretgen.new_input_secret()
        key = secretgen.new_input_key()
        now = self._clock.now_ms()
        with self._transaction(conflict) as session:
            owner = rows.find_workspace(session, workspace)
            rows.ensure_name_free(session, InputRow, name, conflict)
            row = InputRow(
                workspace=owner,
                name=name,
                name_key=rows.name_key(name),
                platform=platform,
                key=key,
                secret_hash=secretgen.hash_input_secret(key, secret),
                enabled=True,
                created_at=now,
                secret_rotated_at=now,
            )
            session.add(row)
            session.flush()
            return rows.input_record(row), secret

    def list_inputs(self, workspace: int | str | None = None) -> list[Input]:
        with self._sessions() as session:
            query = select(InputRow).options(joinedload(InputRow.workspace)).order_by(InputRow.id)
            if workspace is not None:
                query = query.where(InputRow.workspace_id == rows.find_workspace(session, workspace).id)
            return [rows.input_record(row) for row in session.scalars(query)]

    def get_input(self, ref: int | str) -> Input:
        with self._sessions() as session:
            return rows.input_record(rows.find_input(session, ref))

    def input_by_key(self, key: str) -> Input | None:
        """The input with this Events API key, whether enabled or not; None if there is none."""
        if not isinstance(key, str) or len(key) != 32:
            return None
        with self._sessions() as session:
            row = session.scalars(select(InputRow).where(InputRow.key == key)).one_or_none()
            return None if row is None else rows.input_record(row)

    def check_input_secret(self, input: Input, secret: str) -> bool:
        """Whether `secret` is the input's current secret; False for a deleted input."""
        if not isinstance(secret, str):
            return False
        with self._sessions() as session:
            row = session.get(InputRow, input.id)
            if row is None or row.key != input.key:
                return False
            return secretgen.input_secret_matches(row.key, secret, row.secret_hash)

    def set_input_enabled(self, ref: int | str, enabled: bool) -> Input:
        """Enable or disable an input; a disabled input's batches are refused but its data stays."""
        if not isinstance(enabled, bool):
            raise InvalidRequest(f"enabled must be true or false (got {enabled!r})")
        with self._transaction("the input changed concurrently; try again") as session:
            row = rows.find_input(session, ref)
            row.enabled = enabled
            return rows.input_record(row)

    def rename_input(self, ref: int | str, name: str) -> Input:
        name = rows.clean_name(name, "input")
        conflict = f"an input named {name!r} already exists; input names are unique in the account"
        with self._transaction(conflict) as session:
            row = rows.find_input(session, ref)
            rows.ensure_name_free(session, InputRow, name, conflict, row.id)
            row.name, row.name_key = name, rows.name_key(name)
            return rows.input_record(row)

    def rotate_input_secret(self, ref: int | str) -> tuple[Input, str]:
        """Replace an input's secret (the key stays); the old secret stops working at once."""
        secret = secretgen.new_input_secret()
        with self._transaction("the input changed concurrently; try again") as session:
            row = rows.find_input(session, ref)
            row.secret_hash = secretgen.hash_input_secret(row.key, secret)
            row.secret_rotated_at = self._clock.now_ms()
            return rows.input_record(row), secret

    def delete_input(self, ref: int | str) -> None:
        # journey_inputs references inputs with RESTRICT: a racing selection also becomes Conflict.
        with self._sessions() as session:
            name = rows.find_input(session, ref).name
        conflict = f"input {name!r} is still selected by a journey; remove it from those journeys first"
        with self._transaction(conflict) as session:
            row = rows.find_input(session, ref)
            journeys = journeys_selecting(session, row.id)
            if journeys:
                many = len(journeys) > 1
                raise Conflict(
                    f"input {row.name!r} is still selected by journey{'s' if many else ''} "
                    f"{', '.join(repr(j) for j in journeys)}; remove it from "
                    f"{'those journeys' if many else 'that journey'} first"
                )
            session.delete(row)

    # settings

    def get_settings(self) -> AccountSettings:
        with self._sessions() as session:
            row = session.get(AccountSettingsRow, SETTINGS_ID)
            return AccountSettings() if row is None else rows.settings_record(row)

    def update_settings(self, *, activated: int = 0, **changes: int | None) -> AccountSettings:
        """Change some settings; audience_limit cannot go below the audiences activated now.

        The catalog counts the activated audiences itself, under the credit lock, so no activation
        can slip in between the check and the change. `activated` is still accepted (and must be a
        whole number, 0 or more) for older callers, but it no longer decides anything.
        """
        if isinstance(activated, bool) or not isinstance(activated, int) or activated < 0:
            raise InvalidRequest("activated must be a whole number of audiences, 0 or more")
        with self._transaction("the settings changed concurrently; try again") as session:
            row = credits.lock_credits(session)
            updated = apply_changes(rows.settings_record(row), changes, credits.activated_count(session))
            for field in changes:
                setattr(row, field, getattr(updated, field))
            row.updated_at = self._clock.now_ms()
            return updated

    # tokens

    def create_token(self, name: str, scope: str = "admin") -> tuple[ApiToken, str]:
        """A new API token and its plaintext, which is not stored and cannot be shown again."""
        name = rows.clean_name(name, "token")
        if scope not in SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)} (got {scope!r})")
        conflict = f"an active token named {name!r} already exists; choose another name or revoke it first"
        plaintext = secretgen.new_token()
        with self._transaction(conflict) as session:
            active = session.scalars(select(ApiTokenRow.name).where(ApiTokenRow.revoked_at.is_(None)))
            if any(rows.name_key(other) == rows.name_key(name) for other in active):
                raise Conflict(conflict)
            row = ApiTokenRow(
                name=name,
                scope=scope,
                token_hash=secretgen.hash_token(plaintext),
                created_at=self._clock.now_ms(),
                last_used_at=None,
                revoked_at=None,
            )
            session.add(row)
            session.flush()
            return rows.token_record(row), plaintext

    def verify_token(self, plaintext: str) -> ApiToken | None:
        """The token with this plaintext, or None if unknown or revoked; records when it was last used."""
        if not isinstance(plaintext, str) or not plaintext.startswith(secretgen.TOKEN_PREFIX):
            return None
        with self._transaction("the token changed concurrently; try again") as session:
            digest = secretgen.hash_token(plaintext)
            row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest)).one_or_none()
            if row is None or row.revoked_at is not None:
                return None
            now = self._clock.now_ms()
            if row.last_used_at is None or now - row.last_used_at >= TOKEN_USE_RESOLUTION_MS:
                row.last_used_at = now
            return rows.token_record(row)

    def list_tokens(self) -> list[ApiToken]:
        with self._sessions() as session:
            found = session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id))
            return [rows.token_record(row) for row in found]

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token for good; revoking an already revoked token changes nothing."""
        with self._transaction("the token changed concurrently; try again") as session:
            row = None
            if isinstance(token_id, int) and not isinstance(token_id, bool) and 1 <= token_id <= 2**31 - 1:
                row = session.get(ApiTokenRow, token_id)
            if row is None:
                raise NotFound(f"there is no token with id {token_id}")
            if row.revoked_at is None:
                row.revoked_at = self._clock.now_ms()


def _clean_platform(platform: object) -> str:
    value = platform.strip().lower() if isinstance(platform, str) else None
    if value is None or value not in PLATFORMS:
        raise InvalidRequest(f"platform must be one of {', '.join(PLATFORMS)} (got {platform!r})")
    return value
