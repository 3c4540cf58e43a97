"""Alembic migrations, one history per service, applied into the service's own schema.

A service keeps only its revision files, in `services/<service>/migrations/versions/`; the
Alembic environment (`env.py`, `script.py.mako`) is shared from
`services/runtime/alembic_env/`. Revisions create tables without a schema name: on
PostgreSQL the connection maps them (and `alembic_version`) into the service's schema, on
SQLite the service has its own file.

`upgrade()` runs the whole upgrade in one transaction while holding a migration lock
(a PostgreSQL advisory lock; `BEGIN IMMEDIATE` on SQLite), so replicas starting together
apply each revision once, and a failing revision leaves the schema as it was.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from services.runtime.db import create_service_engine, is_postgres, schema_name
from services.runtime.settings import REPO_ROOT, ServiceSettings

__all__ = [
    "ENV_DIR",
    "alembic_config",
    "current_revision",
    "default_versions_dir",
    "downgrade",
    "head_revision",
    "migrate_command",
    "new_revision",
    "upgrade",
]

logger = logging.getLogger(__name__)

ENV_DIR = Path(__file__).resolve().parent / "alembic_env"


def default_versions_dir(service: str) -> Path:
    """`services/<service>/migrations/versions` (service name with `_` for `-`); the API
    gateway is a top-level package, so its migrations are `gateway/migrations/versions`."""
    if service == "gateway":
        return REPO_ROOT / "gateway" / "migrations" / "versions"
    return REPO_ROOT / "services" / schema_name(service) / "migrations" / "versions"


def alembic_config(
    service: str, versions_dir: Path | None = None, target_metadata: MetaData | None = None
) -> Config:
    """An Alembic `Config` for `service` (shared env, the service's own versions folder)."""
    config = Config()
    config.set_main_option("script_location", str(ENV_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions_dir or default_versions_dir(service)))
    config.attributes["service"] = service
    config.attributes["target_metadata"] = target_metadata
    return config


def _migration_engine(service: str, database_url: str | None) -> Engine:
    # On SQLite the service engine already runs each transaction as BEGIN IMMEDIATE with
    # driver auto-transactions off: DDL is transactional and concurrent migrators queue.
    return create_service_engine(service, database_url, poolclass=NullPool)


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"langerhans-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _run(
    *,
    service: str,
    database_url: str | None,
    versions_dir: Path | None,
    target_metadata: MetaData | None,
    action: str,
    revision: str,
) -> str | None:
    schema = schema_name(service)
    engine = _migration_engine(service, database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config(service, versions_dir, target_metadata)
            if is_postgres(engine):
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(schema)}
                )
                # raw SQL in a revision (op.execute) lands in the service's schema too
                connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
                config.attributes["version_table_schema"] = schema
            config.attributes["connection"] = connection
            before = _current(connection, schema if is_postgres(engine) else None)
            getattr(command, action)(config, revision)
            after = _current(connection, schema if is_postgres(engine) else None)
        if before != after:
            logger.info(
                "migrated %s from %s to %s",
                service,
                before or "empty",
                after or "empty",
                extra={"service_schema": schema, "revision": after},
            )
        return after
    finally:
        engine.dispose()


def _current(connection: Connection, version_schema: str | None) -> str | None:
    opts: dict[str, Any] = {"version_table_schema": version_schema} if version_schema else {}
    return MigrationContext.configure(connection, opts=opts).get_current_revision()


SQLITE_LOCK_RETRIES = 8


def upgrade(
    service: str,
    versions_dir: Path | None = None,
    database_url: str | None = None,
    revision: str = "head",
    target_metadata: MetaData | None = None,
) -> str | None:
    """Bring `service`'s schema to `revision`; returns the revision it is at afterwards.

    `database_url` None means the default SQLite file of the service (`var/db/`).
    """
    # SQLite reports "database is locked" at once (no busy wait) when replicas starting together
    # race to upgrade a read into a write; each attempt is one transaction, so retrying is safe.
    for attempt in range(SQLITE_LOCK_RETRIES):
        try:
            return _run(
                service=service,
                database_url=database_url,
                versions_dir=versions_dir,
                target_metadata=target_metadata,
                action="upgrade",
                revision=revision,
            )
        except OperationalError as error:
            if "database is locked" not in str(error) or attempt == SQLITE_LOCK_RETRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def downgrade(
    service: str, revision: str, versions_dir: Path | None = None, database_url: str | None = None
) -> str | None:
    """Step `service`'s schema back to `revision` (development and tests)."""
    return _run(
        service=service,
        database_url=database_url,
        versions_dir=versions_dir,
        target_metadata=None,
        action="downgrade",
        revision=revision,
    )


def current_revision(service: str, database_url: str | None = None) -> str | None:
    """The revision `service`'s schema is at (None for an empty schema)."""
    engine = create_service_engine(service, database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return _current(connection, schema_name(service) if is_postgres(engine) else None)
    finally:
        engine.dispose()


def head_revision(service: str, versions_dir: Path | None = None) -> str | None:
    """The newest revision in `service`'s versions folder."""
    return ScriptDirectory.from_config(alembic_config(service, versions_dir)).get_current_head()


def new_revision(service: str, message: str, versions_dir: Path | None = None) -> Path:
    """Write an empty revision file for `service` to fill in; returns its path."""
    versions = versions_dir or default_versions_dir(service)
    versions.mkdir(parents=True, exist_ok=True)
    script = command.revision(alembic_config(service, versions), message=message)
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic did not create exactly one revision")
    return Path(script.path)


def migrate_command(service: str) -> int:
    """`langerhans migrate <service>`: upgrade to head against the configured database."""
    settings = ServiceSettings(service_name=service)
    versions = default_versions_dir(service)
    if not versions.is_dir():
        print(f"{service}: no migrations folder at {versions}", file=sys.stderr)
        return 2
    try:
        revision = upgrade(service, versions, settings.database_url)
    except Exception as error:  # report, don't dump a traceback on an operator
        print(f"{service}: migration failed: {error}", file=sys.stderr)
        logger.exception("migration of %s failed", service)
        return 1
    url = settings.database_url or "sqlite (var/db)"
    where = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
    print(f"{service}: schema at revision {revision or '(empty)'} on {where}")
    return 0
