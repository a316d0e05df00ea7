"""Outputs (configured partners) and connections from audiences to outputs.

Revision ID: 0003
Revises: 0002
Create Date: 2024-12-16
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # AUTOINCREMENT on SQLite and sequences on PostgreSQL: delivery state is kept by output and
    # connection id, so an id is never handed out twice.
    op.create_table(
        "outputs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_key", sa.String(100), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("accepted_identities", sa.Text(), nullable=True),
        sa.Column("hashing", sa.String(16), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outputs"),
        sa.UniqueConstraint("name_key", name="uq_outputs_name_key"),
        sa.CheckConstraint("hashing IN ('sha256', 'sha1', 'md5')", name=op.f("ck_outputs_hashing")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audience_id", sa.Integer(), nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("on_deactivate", sa.String(16), server_default="keep", nullable=False),
        sa.Column("health", sa.String(16), server_default="ok", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connections"),
        # A connection goes with its audience (deleting a milestone deletes them) but an output
        # cannot be deleted while connections use it.
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name="fk_connections_audience_id_audiences",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["output_id"], ["outputs.id"], name="fk_connections_output_id_outputs", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("audience_id", "output_id", name="uq_connections_audience_id_output_id"),
        sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f("ck_connections_status")),
        sa.CheckConstraint(
            "on_deactivate IN ('keep', 'remove_members')", name=op.f("ck_connections_on_deactivate")
        ),
        sa.CheckConstraint("health IN ('ok', 'retrying', 'faulted')", name=op.f("ck_connections_health")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_connections_output_id", "connections", ["output_id"])


def downgrade() -> None:
    op.drop_index("ix_connections_output_id", table_name="connections")
    op.drop_table("connections")
    op.drop_table("outputs")
