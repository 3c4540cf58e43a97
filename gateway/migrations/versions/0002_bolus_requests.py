"""bolus requests and the per-person bolus guard

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bolus_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("requested_by", sa.String(length=36), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("insulin_u", sa.Float(), nullable=False),
        sa.Column("immediate_pct", sa.Float(), nullable=False),
        sa.Column("extended_duration_min", sa.Integer(), nullable=False),
        sa.Column("carbs_g", sa.Float(), nullable=False),
        sa.Column("recommendation", sa.JSON(), nullable=False),
        sa.Column("calculated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["person_id"], ["accounts.id"], name=op.f("fk_bolus_requests_person_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["accounts.id"],
            name=op.f("fk_bolus_requests_requested_by_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bolus_requests")),
    )
    with op.batch_alter_table("bolus_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bolus_requests_person_id"), ["person_id"], unique=False
        )
    op.create_table(
        "bolus_guards",
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("last_issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_request_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["person_id"], ["accounts.id"], name=op.f("fk_bolus_guards_person_id_accounts")
        ),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_bolus_guards")),
    )


def downgrade() -> None:
    op.drop_table("bolus_guards")
    with op.batch_alter_table("bolus_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bolus_requests_person_id"))
    op.drop_table("bolus_requests")
