"""The gateway's storage: its engine, session factory and Alembic migrations."""

from __future__ import annotations

import weakref
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.service import install_audit_chaining
from gateway.models import Base
from services.runtime.db import create_service_engine
from services.runtime.migrations import upgrade

__all__ = [
    "VERSIONS_DIR",
    "make_engine",
    "make_read_session_factory",
    "make_session_factory",
    "migrate",
]

VERSIONS_DIR = Path(__file__).resolve().parent / "migrations" / "versions"


def make_engine(database_url: str | None) -> Engine:
    """The gateway's own schema (PostgreSQL) or SQLite file (default, or an explicit URL)."""
    if database_url and database_url.startswith("sqlite"):
        # Tests hand an explicit SQLite file; still get the service's pragmas.
        return create_service_engine(
            "gateway", database_url, connect_args={"check_same_thread": False}
        )
    if database_url:
        return create_service_engine("gateway", database_url)
    return create_service_engine("gateway", None, connect_args={"check_same_thread": False})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    install_audit_chaining(factory)
    return factory


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that only read.

    On a SQLite file: a second, read-only engine on the same file whose transactions begin
    DEFERRED (`create_service_engine(read_only=True)`), so a read takes no write lock and
    never queues behind a writer (WAL: it reads the last committed snapshot); its
    connections refuse writes (`PRAGMA query_only`), so a write through it fails loudly
    instead of racing. Elsewhere (PostgreSQL, in-memory SQLite) the write sessions, unchanged.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return make_session_factory(engine)
    reader = create_service_engine(
        "gateway",
        engine.url.render_as_string(hide_password=False),
        read_only=True,
        connect_args={"check_same_thread": False},
    )
    factory = sessionmaker(bind=reader, expire_on_commit=False)
    weakref.finalize(factory, reader.dispose)
    return factory


def migrate(database_url: str | None) -> str | None:
    """Bring the gateway schema to the newest revision (idempotent, safe for replicas).

    Uses the shared migration runner (one transaction under a migration lock, tables in the
    gateway's own schema); the gateway keeps only its revision files.
    """
    return upgrade(
        "gateway",
        versions_dir=VERSIONS_DIR,
        database_url=database_url,
        target_metadata=Base.metadata,
    )
