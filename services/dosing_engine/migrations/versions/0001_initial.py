"""dosing-engine: settings, readings, doses, carbs, pump state, sequences, commands, decisions,
processed events, outbox.

Revision ID: dosing_0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

from services.dosing_engine.repository import metadata

revision = "dosing_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The initial schema is the tables as declared at this revision; later revisions must
    # spell out their changes with op.* so that this one stays what it was.
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
