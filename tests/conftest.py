"""Fixtures shared by every test area."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the real PostgreSQL server for `postgres` tests.

    Taken from TEST_POSTGRES_URL, else DATABASE_URL. Without either the test is skipped on a
    developer machine (start one with `scripts/postgres.sh start` and export
    TEST_POSTGRES_URL=$(scripts/postgres.sh url)), but fails under CI=true: a CI run that
    silently skips its database tests would report green without testing storage.
    """
    candidates = (os.environ.get("TEST_POSTGRES_URL"), os.environ.get("DATABASE_URL"))
    for url in candidates:
        if url and url.startswith(("postgresql", "postgres:")):
            return url
    message = "PostgreSQL tests need TEST_POSTGRES_URL or DATABASE_URL (scripts/postgres.sh start)"
    if _running_in_ci():
        pytest.fail(f"CI=true but no database configured: {message}")
    pytest.skip(message)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for a repository test; the test runs once on SQLite, once on PostgreSQL.

    Pair it with `unique_service` so concurrent tests on one PostgreSQL database never share a
    schema.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def unique_service(database_url: str) -> Iterator[str]:
    """A throw-away service name (hence schema); its PostgreSQL schema is dropped afterwards."""
    service = f"test-svc-{uuid.uuid4().hex[:10]}"
    yield service
    if database_url.startswith(("postgresql", "postgres:")):
        from sqlalchemy import create_engine, text

        from services.runtime.db import normalise_database_url, schema_name

        engine = create_engine(normalise_database_url(database_url))
        try:
            with engine.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name(service)}" CASCADE'))
        finally:
            engine.dispose()
