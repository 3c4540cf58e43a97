"""Alembic environment shared by every service (see services/runtime/migrations.py).

Only run through `services.runtime.migrations`, which hands over an open connection already
inside a transaction, holding the migration lock, and mapped onto the service's schema.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with services.runtime.migrations (langerhans migrate)")

context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    # PostgreSQL: alembic_version lives in the service's own schema, not in public.
    version_table_schema=config.attributes.get("version_table_schema"),
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
