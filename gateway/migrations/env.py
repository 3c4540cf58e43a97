"""Alembic environment for the gateway's tables (engine handed in by `gateway.db.migrate`)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from gateway.models import Base

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("run migrations through gateway.db.migrate(engine)")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
