"""Shared builders for the dosing-engine tests; real-broker fixtures from the runtime tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2, therapy_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2
from langerhans.pump.v1 import pump_pb2
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from kernels.decision import BasalSegment, DecisionInput, Mode, TherapySettings
from services.dosing_engine.events import COMMANDS_TOPIC, DECISIONS_TOPIC
from services.dosing_engine.model import to_timestamp
from services.dosing_engine.repository import metadata
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner, TrustedKeys, generate_signing_key
from services.runtime.outbox import outbox_events
from tests.runtime.conftest import kafka_bootstrap, make_topic

__all__ = [
    "KERNEL_NOW_S",
    "KERNEL_SCHEDULED_U_PER_H",
    "START",
    "closed_loop_input",
    "kafka_bootstrap",
    "make_topic",
    "published_decisions_and_commands",
    "pump_event",
    "reading",
    "settings_changed",
]

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

KERNEL_NOW_S = 100_000.0
KERNEL_SCHEDULED_U_PER_H = 0.8


def closed_loop_input(
    glucose_mg_dl: Sequence[float], mode: Mode = Mode.CLOSED_LOOP_SMB
) -> DecisionInput:
    """A decision at `KERNEL_NOW_S` over readings 5 min apart ending then (the last one
    newest): ISF 50, CR 10, max IOB 6 U, max basal 3 U/h, a flat schedule, no insulin given."""
    n = len(glucose_mg_dl)
    t = tuple(KERNEL_NOW_S - 300.0 * (n - 1 - i) for i in range(n))
    settings = TherapySettings(
        isf_mg_dl_per_u=50.0,
        carb_ratio_g_per_u=10.0,
        max_iob_u=6.0,
        max_basal_u_per_h=3.0,
        basal_schedule=(BasalSegment(start_min=0.0, rate_u_per_h=KERNEL_SCHEDULED_U_PER_H),),
    )
    return DecisionInput(
        now_s=KERNEL_NOW_S, mode=mode, cgm_t_s=t, cgm_mg_dl=tuple(glucose_mg_dl), settings=settings
    )


def published_decisions_and_commands(
    sessions: sessionmaker[Session], signer: CommandSigner
) -> tuple[list[dosing_pb2.DosingDecision], list[device_pb2.PumpCommand]]:
    """The decisions and the verified pump commands the handler wrote to the outbox, in order."""
    with sessions() as session:
        rows = session.execute(
            select(outbox_events.c.topic, outbox_events.c.payload).order_by(outbox_events.c.id)
        ).all()
    keys = TrustedKeys([signer.public_key])
    decisions = [
        dosing_pb2.DosingDecision.FromString(bytes(p)) for t, p in rows if t == DECISIONS_TOPIC
    ]
    commands = [keys.verify(bytes(p)) for t, p in rows if t == COMMANDS_TOPIC]
    return decisions, commands


def settings_changed(
    patient_id: str,
    mode: int = common_pb2.LOOP_MODE_CLOSED_LOOP_SMB,
    version: int = 1,
    max_iob_u: float = 6.0,
) -> therapy_pb2.TherapySettingsChanged:
    s = therapy_pb2.TherapySettings(
        patient_id=patient_id,
        version=version,
        time_zone="UTC",
        max_basal_rate_u_per_h=3.0,
        max_bolus_u=8.0,
        max_iob_u=max_iob_u,
        insulin_type=common_pb2.INSULIN_TYPE_RAPID_ACTING,
        age_group=common_pb2.AGE_GROUP_ADULT,
        suspend_threshold_mg_dl=80.0,
        loop_mode=mode,  # type: ignore[arg-type]
    )
    s.basal_schedule.add(start_min=0, rate_u_per_h=0.8)
    s.carb_ratio_schedule.add(start_min=0, carb_ratio_g_per_u=10.0)
    s.sensitivity_schedule.add(start_min=0, isf_mg_dl_per_u=50.0)
    s.target_schedule.add(start_min=0, low_mg_dl=100.0, high_mg_dl=110.0)
    return therapy_pb2.TherapySettingsChanged(settings=s, changed_by="clinician-1")


def reading(
    patient_id: str, t: datetime, glucose: float, *, device_id: str = "hub-1", noise: int = 0
) -> cgm_pb2.CgmReading:
    msg = cgm_pb2.CgmReading(
        reading_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{patient_id}|{t.isoformat()}")),
        patient_id=patient_id,
        device_id=device_id,
        sensor_id="sensor-1",
        glucose_mg_dl=glucose,
        noise_level=noise,
    )
    msg.measured_at.CopyFrom(to_timestamp(t.timestamp()))
    msg.received_at.CopyFrom(to_timestamp(t.timestamp()))
    return msg


def pump_event(patient_id: str, t: datetime, **event: Any) -> pump_pb2.PumpEvent:
    ev = pump_pb2.PumpEvent(
        event_id=uuid.uuid4().hex, patient_id=patient_id, device_id="hub-1", **event
    )
    ev.occurred_at.CopyFrom(to_timestamp(t.timestamp()))
    return ev


def rising_history(patient_id: str, end: datetime, n: int = 36) -> list[cgm_pb2.CgmReading]:
    """n readings 5 min apart ending at `end`, rising from 140 to ~250 mg/dL."""
    return [
        reading(patient_id, end - timedelta(minutes=5 * (n - 1 - i)), 140.0 + 3.0 * i)
        for i in range(n)
    ]


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'dosing.sqlite3'}")
    metadata.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def signer() -> CommandSigner:
    return generate_signing_key()
