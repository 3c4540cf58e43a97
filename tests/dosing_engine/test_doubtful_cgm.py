"""A reading cgm-ingestion flagged as doubtful (jump, flat, compression low, warm-up, sensor
fault) never raises insulin: the engine treats it as noisy CGM."""

from __future__ import annotations

import pytest
from langerhans.cgm.v1 import cgm_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as pb

from kernels.decision import decide
from services.dosing_engine.model import decision_input, to_timestamp
from tests.dosing_engine.conftest import START, rising_history, settings_changed

P = "patient-doubtful"


def _request(fault: int | None) -> pb.DecideRequest:
    req = pb.DecideRequest(patient_id=P)
    req.now.CopyFrom(to_timestamp(START.timestamp()))
    req.settings.CopyFrom(settings_changed(P).settings)
    history = rising_history(P, START)
    if fault is not None:
        history[-1].faults.append(fault)  # type: ignore[arg-type]
    req.cgm_history.extend(history)
    return req


def test_rising_clean_readings_raise_insulin() -> None:
    d = decide(decision_input(_request(None)))
    assert d.smb_u > 0 or d.rate_u_per_h > d.scheduled_basal_u_per_h


@pytest.mark.parametrize(
    "fault",
    [
        cgm_pb2.SENSOR_FAULT_JUMP,
        cgm_pb2.SENSOR_FAULT_FLAT,
        cgm_pb2.SENSOR_FAULT_COMPRESSION_LOW,
        cgm_pb2.SENSOR_FAULT_WARM_UP,
        cgm_pb2.SENSOR_FAULT_DEVICE_REPORTED,
    ],
)
def test_a_doubtful_latest_reading_gives_no_increase(fault: int) -> None:
    d = decide(decision_input(_request(fault)))
    assert d.smb_u == 0
    assert d.rate_u_per_h <= d.scheduled_basal_u_per_h
    assert "NOISY_CGM" in {r.code for r in d.reasons}
