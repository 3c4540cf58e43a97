"""The alerts consumer handler translates each input event (fakes: none; real SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import therapy_pb2
from langerhans.pump.v1 import pump_pb2

from services.alerts.events import AlertTopics, make_handler
from services.alerts.model import AlertKind
from services.alerts.repository import AlertRepository
from services.runtime.clock import FixedClock
from services.runtime.db import session_scope
from services.runtime.kafka.envelope import MalformedEventError, new_envelope
from tests.alerts.helpers import make_engine

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_handler_applies_settings_readings_and_pump_events(tmp_path: Path) -> None:
    _engine, sessions = make_engine(tmp_path)
    handler = make_handler(FixedClock(T0), AlertTopics())

    def handle(message) -> None:
        with session_scope(sessions) as session:
            handler(new_envelope("p1", message, source="test", time=T0), session)

    settings = therapy_pb2.TherapySettingsChanged(
        settings=therapy_pb2.TherapySettings(
            patient_id="p1",
            time_zone="Europe/Berlin",
            sensitivity_schedule=[therapy_pb2.SensitivitySegment(isf_mg_dl_per_u=40)],
            carb_ratio_schedule=[therapy_pb2.CarbRatioSegment(carb_ratio_g_per_u=12)],
            basal_schedule=[therapy_pb2.BasalSegment(rate_u_per_h=0.8)],
        )
    )
    handle(settings)
    occlusion = pump_pb2.PumpEvent(patient_id="p1", occlusion_detected=pump_pb2.OcclusionDetected())
    occlusion.occurred_at.FromDatetime(T0)
    handle(occlusion)
    reading = cgm_pb2.CgmReading(patient_id="p1", glucose_mg_dl=52)
    reading.measured_at.FromDatetime(T0)
    handle(reading)
    with sessions() as session:
        repository = AlertRepository(session)
        stored = repository.settings("p1")
        state = repository.load_state("p1")
        open_kinds = set(repository.open_alerts("p1"))
    assert (stored.isf_mg_dl_per_u, stored.carb_ratio_g_per_u) == (40, 12)
    assert stored.time_zone == "Europe/Berlin"
    assert state is not None
    assert state.scheduled_basal_u_per_h == 0.8
    assert {AlertKind.OCCLUSION, AlertKind.URGENT_LOW} <= open_kinds
    with session_scope(sessions) as session, pytest.raises(MalformedEventError):
        handler(new_envelope("p1", b"?", source="t", time=T0, event_type="x.Unknown"), session)
