"""Raw CGM readings at the ingestion boundary: any protobuf field values, and any payload
bytes through the real handler on SQLite. Every input becomes a valid reading inside the
sensor range or a stored rejection with a reason; nothing raises."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langerhans.cgm.v1 import cgm_pb2
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services.cgm_ingestion.events import handle_raw, raw_from_proto
from services.cgm_ingestion.readings import (
    MAX_SENSOR_MG_DL,
    MIN_SENSOR_MG_DL,
    Rejection,
    ValidReading,
    validate,
)
from services.cgm_ingestion.repository import metadata, readings, rejected_readings
from services.runtime import migrations
from services.runtime.clock import FixedClock
from services.runtime.db import create_service_engine, session_scope
from services.runtime.kafka.envelope import new_envelope
from tests.fuzz.conftest import Tally, examples

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
FUZZ_SETTINGS = settings(
    max_examples=examples(), deadline=None, suppress_health_check=list(HealthCheck)
)

# Timestamp seconds across and beyond what protobuf's Timestamp allows.
seconds = st.one_of(
    st.integers(int((NOW - timedelta(days=40)).timestamp()), int(NOW.timestamp()) + 3600),
    st.integers(-(2**63), 2**63 - 1),
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-50, max_value=1200),
    st.floats(min_value=0, max_value=40),
)


@st.composite
def raw_messages(draw: st.DrawFn) -> cgm_pb2.RawCgmReading:
    message = cgm_pb2.RawCgmReading(
        patient_id=draw(st.text(max_size=8)),
        sensor_id=draw(st.text(max_size=8)),
        sensor_age_min=draw(st.integers(0, 2**32 - 1)),
        source_record_id=draw(st.text(max_size=8)),
    )
    if draw(st.booleans()):
        message.measured_at.seconds = draw(seconds)
        message.measured_at.nanos = draw(st.integers(0, 999_999_999))
    if draw(st.booleans()):
        message.glucose.value = draw(values)
        message.glucose.unit = draw(st.integers(0, 5))  # type: ignore[assignment]
    return message


def test_any_raw_reading_is_valid_in_range_or_rejected(tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(message=raw_messages())
    def run(message: cgm_pb2.RawCgmReading) -> None:
        try:
            outcome = validate(raw_from_proto(message), NOW)
        except Exception:
            tally.record("cgm.validate", "unexpected")
            raise
        if isinstance(outcome, Rejection):
            tally.record("cgm.validate", "parse_error")
            return
        assert isinstance(outcome, ValidReading)
        assert MIN_SENSOR_MG_DL <= outcome.glucose_mg_dl <= MAX_SENSOR_MG_DL
        assert outcome.device_time - NOW <= timedelta(minutes=5)
        assert math.isfinite(outcome.glucose_mg_dl)
        tally.record("cgm.validate", "ok")

    run()


def test_any_payload_through_the_handler_is_stored_or_rejected(
    tmp_path: Path, tally: Tally
) -> None:
    """The real handler on a real (SQLite) store; each event ends as a reading or a rejection."""
    url = f"sqlite:///{tmp_path / 'cgm.sqlite3'}"
    migrations.upgrade("cgm-ingestion", database_url=url, target_metadata=metadata)
    engine = create_service_engine("cgm-ingestion", url)
    sessions = sessionmaker(engine)
    clock = FixedClock(NOW)
    handled = 0

    @settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        payload=st.one_of(
            st.binary(max_size=80), raw_messages().map(lambda m: m.SerializeToString())
        )
    )
    def run(payload: bytes) -> None:
        nonlocal handled
        envelope = new_envelope(
            "patient-1",
            payload,
            source="fuzz",
            time=NOW,
            event_type=cgm_pb2.RawCgmReading.DESCRIPTOR.full_name,
            event_id=str(uuid.uuid4()),
        )
        try:
            with session_scope(sessions) as session:
                handle_raw(envelope, session, clock, "UTC")
        except Exception:
            tally.record("cgm.handler", "unexpected")
            raise
        handled += 1
        tally.record("cgm.handler", "handled")

    run()
    with session_scope(sessions) as session:
        stored = session.scalar(select(func.count()).select_from(readings))
        rejected = session.scalar(select(func.count()).select_from(rejected_readings))
    engine.dispose()
    # Duplicates of one identity collapse into one stored reading, so stored + rejected can be
    # below `handled`, never above it; and nothing handled may vanish without a trace.
    assert stored is not None
    assert rejected is not None
    assert 0 < stored + rejected <= handled
