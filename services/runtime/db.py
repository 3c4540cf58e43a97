"""Storage: one schema per service.

PostgreSQL (``DATABASE_URL=postgresql://…``) gives each service its own schema in one
database; tables are declared without a schema and mapped onto the service's schema with
SQLAlchemy's ``schema_translate_map``. The embedded default is one SQLite file per service
under ``var/db/`` (WAL mode), which is the SQLite equivalent of a schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.settings import var_dir

__all__ = [
    "create_service_engine",
    "is_postgres",
    "naming_convention",
    "normalise_database_url",
    "schema_name",
    "session_scope",
    "snapshot_engine",
    "sqlite_driver",
]

naming_convention: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Arbitrary constant advisory-lock id for schema creation ("LGHSCHEM" in ASCII).
_SCHEMA_LOCK_KEY = 0x4C4748534348454D


def new_metadata() -> MetaData:
    """MetaData with stable constraint names (Alembic needs them to diff)."""
    return MetaData(naming_convention=naming_convention)


def schema_name(service: str) -> str:
    """`dosing-engine` -> `dosing_engine`."""
    return service.replace("-", "_")


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers and one writer proceed together; FULL sync so a committed
    # state change survives a crash (an outbox row must never vanish after commit).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
    # The stdlib driver starts transactions lazily (only before DML) and so auto-commits
    # DDL and breaks SAVEPOINT: a rolled-back unit of work could still leave rows behind.
    # Take over: no implicit transactions, SQLAlchemy's "begin" emits ours (below).
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
    # instead of one failing with SQLITE_BUSY when it upgrades a read to a write.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, _record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")  # a write through a read-only engine fails loudly
    cursor.close()


def _sqlite_begin_deferred(connection: Any) -> None:
    # Pure reads: a DEFERRED transaction reads one WAL snapshot without the write lock, so
    # readers never queue behind each other or behind a writer.
    connection.exec_driver_sql("BEGIN DEFERRED")


def create_service_engine(
    service: str, database_url: str | None = None, *, read_only: bool = False, **kwargs: Any
) -> Engine:
    """Engine for `service`'s own schema (PostgreSQL) or own SQLite file (default).

    `read_only=True` (SQLite) gives an engine for pure reads: DEFERRED transactions that do
    not take the write lock, on connections that refuse writes (`PRAGMA query_only`).
    Everything that may write keeps the default engine (IMMEDIATE transactions).
    """
    schema = schema_name(service)
    if database_url:
        url = normalise_database_url(database_url)
    else:
        db_dir = var_dir() / "db"
        db_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{db_dir / schema}.sqlite3"
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_read_only if read_only else _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_deferred if read_only else _sqlite_begin)
        return engine
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    with engine.begin() as connection:
        # CREATE SCHEMA IF NOT EXISTS is not safe against itself: two replicas starting at
        # once can both pass the check and one fails on the catalogue's unique index.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    return engine.execution_options(schema_translate_map={None: schema})


def snapshot_engine(service: str, database_url: str | None, engine: Engine) -> Engine | None:
    """An engine that reads `engine`'s committed rows without the write lock (SQLite: a WAL
    snapshot, `read_only=True`); None where `engine`'s own sessions already do (PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return None
    return create_service_engine(service, database_url, read_only=True)


def sqlite_driver(session: Session) -> Any | None:
    """The transaction's DBAPI connection when storage is SQLite (the default), else None.

    Hot paths send their statements on SQLite straight to the driver: SQLAlchemy's per-row
    parameter processing cost more CPU than SQLite itself (py-spy). Same statements, same
    transaction; PostgreSQL keeps the SQLAlchemy path (its schema-per-service translation
    happens there).
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return None
    return connection.connection.driver_connection


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit once at the end, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
