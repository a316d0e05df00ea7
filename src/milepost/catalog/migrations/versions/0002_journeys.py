"""Journeys, their inputs, milestones, audiences (with the references between them) and
calculated attributes.

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_key", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_journeys"),
        sa.UniqueConstraint("name_key", name="uq_journeys_name_key"),
    )
    op.create_table(
        "journey_inputs",
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("input_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("journey_id", "input_id", name="pk_journey_inputs"),
        sa.ForeignKeyConstraint(
            ["journey_id"], ["journeys.id"], name="fk_journey_inputs_journey_id_journeys", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["input_id"], ["inputs.id"], name="fk_journey_inputs_input_id_inputs", ondelete="RESTRICT"
        ),
    )
    op.create_index("ix_journey_inputs_input_id", "journey_inputs", ["input_id"])
    op.create_table(
        "milestones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_key", sa.String(100), nullable=False),
        sa.Column("criteria", sa.Text(), nullable=True),
        sa.Column("remaining", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_milestones"),
        sa.ForeignKeyConstraint(
            ["journey_id"], ["journeys.id"], name="fk_milestones_journey_id_journeys", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["milestones.id"], name="fk_milestones_parent_id_milestones", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("journey_id", "name_key", name="uq_milestones_journey_id_name_key"),
    )
    op.create_index("ix_milestones_parent_id", "milestones", ["parent_id"])
    # AUTOINCREMENT on SQLite and a sequence on PostgreSQL: an audience id is never reused.
    op.create_table(
        "audiences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("milestone_id", sa.Integer(), nullable=False),
        sa.Column("external_name", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audiences"),
        sa.ForeignKeyConstraint(
            ["milestone_id"],
            ["milestones.id"],
            name="fk_audiences_milestone_id_milestones",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("milestone_id", name="uq_audiences_milestone_id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audience_references",
        sa.Column("milestone_id", sa.Integer(), nullable=False),
        sa.Column("audience_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("milestone_id", "audience_id", name="pk_audience_references"),
        sa.ForeignKeyConstraint(
            ["milestone_id"],
            ["milestones.id"],
            name="fk_audience_references_milestone_id_milestones",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name="fk_audience_references_audience_id_audiences",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_audience_references_audience_id", "audience_references", ["audience_id"])
    op.create_table(
        "calculated_attributes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_key", sa.String(100), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calculated_attributes"),
        sa.UniqueConstraint("name_key", name="uq_calculated_attributes_name_key"),
    )


def downgrade() -> None:
    op.drop_table("calculated_attributes")
    op.drop_index("ix_audience_references_audience_id", table_name="audience_references")
    op.drop_table("audience_references")
    op.drop_table("audiences")
    op.drop_index("ix_milestones_parent_id", table_name="milestones")
    op.drop_table("milestones")
    op.drop_index("ix_journey_inputs_input_id", table_name="journey_inputs")
    op.drop_table("journey_inputs")
    op.drop_table("journeys")
