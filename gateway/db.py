"""The gateway's storage: its engine, session factory and Alembic migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.service import install_audit_chaining
from services.runtime.db import create_service_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "make_engine", "make_session_factory", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


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


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the gateway schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")
