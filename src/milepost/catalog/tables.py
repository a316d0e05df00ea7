"""ORM models of the catalog; the migrations in `migrations/versions` must create exactly these.

Names are unique case-insensitively through a `name_key` column holding the case-folded name,
which works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAME_LENGTH = 100
EXTERNAL_NAME_LENGTH = 255

# Deterministic constraint names keep migrations portable and later ALTERs possible on SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkspaceRow(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)

    inputs: Mapped[list[InputRow]] = relationship(back_populates="workspace")


class InputRow(Base):
    __tablename__ = "inputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("workspaces.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[int] = mapped_column(BigInteger)
    secret_rotated_at: Mapped[int] = mapped_column(BigInteger)

    workspace: Mapped[WorkspaceRow] = relationship(back_populates="inputs")


class AccountSettingsRow(Base):
    """The single settings row of the account (id 1)."""

    __tablename__ = "account_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audience_limit: Mapped[int] = mapped_column(Integer)
    lookback_days: Mapped[int] = mapped_column(Integer)
    profile_lifetime_days: Mapped[int | None] = mapped_column(Integer)
    retention_days: Mapped[int] = mapped_column(Integer)
    request_dedupe_days: Mapped[int] = mapped_column(Integer)
    message_dedupe_days: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class JourneyRow(Base):
    __tablename__ = "journeys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class JourneyInputRow(Base):
    """One input a journey selects; an input cannot be deleted while a journey selects it."""

    __tablename__ = "journey_inputs"

    journey_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("journeys.id", ondelete="CASCADE"), primary_key=True
    )
    input_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("inputs.id", ondelete="RESTRICT"), primary_key=True, index=True
    )


class MilestoneRow(Base):
    """A node of a journey tree; `parent_id` NULL is the root and `criteria` NULL a remaining split.

    Positions are 0-based and contiguous among the children of one parent, a remaining split last.
    """

    __tablename__ = "milestones"
    __table_args__ = (UniqueConstraint("journey_id", "name_key", name="uq_milestones_journey_id_name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    journey_id: Mapped[int] = mapped_column(Integer, ForeignKey("journeys.id", ondelete="RESTRICT"))
    parent_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("milestones.id", ondelete="RESTRICT"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    criteria: Mapped[str | None] = mapped_column(Text)
    remaining: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class AudienceRow(Base):
    """The audience a milestone owns. Ids come from AUTOINCREMENT (SQLite) or a sequence
    (PostgreSQL), so an id is never handed out twice, even after its audience is deleted."""

    __tablename__ = "audiences"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    milestone_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("milestones.id", ondelete="RESTRICT"), unique=True
    )
    external_name: Mapped[str | None] = mapped_column(String(EXTERNAL_NAME_LENGTH))
    created_at: Mapped[int] = mapped_column(BigInteger)


class AudienceReferenceRow(Base):
    """A milestone whose criteria refer to an audience: the audience cannot go while it does."""

    __tablename__ = "audience_references"

    milestone_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("milestones.id", ondelete="CASCADE"), primary_key=True
    )
    audience_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("audiences.id", ondelete="RESTRICT"), primary_key=True, index=True
    )


class CalculatedAttributeRow(Base):
    __tablename__ = "calculated_attributes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    definition: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class OutputRow(Base):
    """A configured partner. `settings` holds the encoded settings (see `output_rows`), and
    `accepted_identities` a JSON list of identity types or NULL for the type's default."""

    __tablename__ = "outputs"
    __table_args__ = (CheckConstraint("hashing IN ('sha256', 'sha1', 'md5')", name="hashing"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    settings: Mapped[str] = mapped_column(Text)
    accepted_identities: Mapped[str | None] = mapped_column(Text)
    hashing: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ConnectionRow(Base):
    """A link from an audience to an output: it goes with its audience, and keeps its output."""

    __tablename__ = "connections"
    __table_args__ = (
        UniqueConstraint("audience_id", "output_id", name="uq_connections_audience_id_output_id"),
        CheckConstraint("status IN ('active', 'inactive')", name="status"),
        CheckConstraint("on_deactivate IN ('keep', 'remove_members')", name="on_deactivate"),
        CheckConstraint("health IN ('ok', 'retrying', 'faulted')", name="health"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audience_id: Mapped[int] = mapped_column(Integer, ForeignKey("audiences.id", ondelete="CASCADE"))
    output_id: Mapped[int] = mapped_column(Integer, ForeignKey("outputs.id", ondelete="RESTRICT"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    settings: Mapped[str] = mapped_column(Text)
    on_deactivate: Mapped[str] = mapped_column(String(16), server_default="keep")
    health: Mapped[str] = mapped_column(String(16), server_default="ok")
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
