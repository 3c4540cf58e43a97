"""device-gateway: enrolment tokens, devices, revoked certificates, commands, transitions, outbox.

Revision ID: device_gateway_0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

from services.device_gateway.repository import metadata

revision = "device_gateway_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The initial schema is the tables as declared at this revision; later revisions must
    # spell out their changes with op.* so that this one stays what it was.
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
