"""The cached repository: what a rolled-back transaction did is forgotten, commits are seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from services.cgm_ingestion.readings import RawReading
from services.cgm_ingestion.repository import ReadingRepository, SeriesCache, metadata
from services.cgm_ingestion.service import IngestionService
from services.runtime import migrations
from services.runtime.clock import FixedClock
from services.runtime.db import create_service_engine

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _raw(minute: int, value: float) -> RawReading:
    return RawReading("p1", "s1", T0 + timedelta(minutes=minute), value, "mg/dL")


def test_cache_follows_commits_and_forgets_rollbacks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cgm.sqlite3'}"
    migrations.upgrade("cgm-ingestion", database_url=url, target_metadata=metadata)
    sessions = sessionmaker(create_service_engine("cgm-ingestion", url))
    cache = SeriesCache()
    clock = FixedClock(T0 + timedelta(hours=1))

    def ingest(raw: RawReading, commit: bool = True):
        with sessions() as session:
            session.begin()
            outcome = IngestionService(ReadingRepository(session, cache), clock).ingest(raw)
            if commit:
                session.commit()
            else:
                session.rollback()
        return outcome

    assert ingest(_raw(0, 100)).reading is not None
    assert ingest(_raw(0, 100)).duplicate
    assert ingest(_raw(5, 104), commit=False).reading is not None
    assert ingest(_raw(5, 104)).reading is not None  # the rolled-back one is not "seen"
    assert ingest(_raw(10, 108)).reading is not None
    # A reading stored behind the cache's back (another replica) is still a duplicate.
    with sessions() as session, session.begin():
        IngestionService(ReadingRepository(session), clock).ingest(_raw(15, 112))
    assert ingest(_raw(15, 112)).duplicate
    with sessions() as session:
        stored = ReadingRepository(session).series("p1", "s1", T0, T0 + timedelta(hours=1))
    assert [r.glucose_mg_dl for r in stored] == [100, 104, 108, 112]
