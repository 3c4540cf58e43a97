"""A small repository on a migrated service schema, on SQLite and on the real PostgreSQL:
one unit of work per request, duplicates refused with a clear error, nothing half-written."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, Integer, String, Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.runtime import errors, migrations
from services.runtime.db import create_service_engine, new_metadata, session_scope

metadata = new_metadata()
readings = Table(
    "readings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("reading_key", String(64), nullable=False, unique=True),
    Column("glucose_mg_dl", Integer, nullable=False),
)

REVISION = """
    import sqlalchemy as sa
    from alembic import op

    revision = "0001"
    down_revision = None
    branch_labels = None
    depends_on = None

    def upgrade():
        op.create_table(
            "readings",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("patient_id", sa.String(64), nullable=False),
            sa.Column("reading_key", sa.String(64), nullable=False),
            sa.Column("glucose_mg_dl", sa.Integer, nullable=False),
            sa.UniqueConstraint("reading_key", name="uq_readings_reading_key"),
        )

    def downgrade():
        op.drop_table("readings")
    """


class ReadingRepository:
    """The only place that queries `readings`; the caller owns the transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, patient_id: str, reading_key: str, glucose_mg_dl: int) -> None:
        try:
            with self.session.begin_nested():
                self.session.execute(
                    readings.insert().values(
                        patient_id=patient_id, reading_key=reading_key, glucose_mg_dl=glucose_mg_dl
                    )
                )
        except IntegrityError as error:
            raise errors.AlreadyExists(f"reading {reading_key} already recorded") from error

    def for_patient(self, patient_id: str) -> list[int]:
        rows = self.session.execute(
            select(readings.c.glucose_mg_dl)
            .where(readings.c.patient_id == patient_id)
            .order_by(readings.c.id)
        )
        return [row[0] for row in rows]

    def count(self) -> int:
        return int(self.session.execute(select(func.count()).select_from(readings)).scalar_one())


@pytest.fixture
def engine(tmp_path: Path, database_url: str, unique_service: str) -> Iterator[Engine]:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_readings.py").write_text(textwrap.dedent(REVISION))
    migrations.upgrade(unique_service, versions, database_url)
    engine = create_service_engine(unique_service, database_url)
    yield engine
    engine.dispose()


def test_committed_readings_are_read_back(engine: Engine) -> None:
    factory = sessionmaker(engine)
    with session_scope(factory) as session:
        repo = ReadingRepository(session)
        repo.add("p-1", "k-1", 110)
        repo.add("p-1", "k-2", 95)
        repo.add("p-2", "k-3", 240)
    with session_scope(factory) as session:
        assert ReadingRepository(session).for_patient("p-1") == [110, 95]


def test_duplicate_is_refused_and_the_rest_of_the_unit_is_kept(engine: Engine) -> None:
    factory = sessionmaker(engine)
    with session_scope(factory) as session:
        ReadingRepository(session).add("p-1", "k-1", 110)
    with session_scope(factory) as session:
        repo = ReadingRepository(session)
        with pytest.raises(errors.AlreadyExists, match="k-1"):
            repo.add("p-1", "k-1", 111)
        repo.add("p-1", "k-2", 120)
    with session_scope(factory) as session:
        assert ReadingRepository(session).for_patient("p-1") == [110, 120]


def test_failed_unit_of_work_writes_nothing(engine: Engine) -> None:
    factory = sessionmaker(engine)

    def handle() -> None:
        with session_scope(factory) as session:
            ReadingRepository(session).add("p-1", "k-1", 110)
            raise RuntimeError("handler failed after the insert")

    with pytest.raises(RuntimeError):
        handle()
    with session_scope(factory) as session:
        assert ReadingRepository(session).count() == 0
