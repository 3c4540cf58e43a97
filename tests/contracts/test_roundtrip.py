"""Key messages survive a serialise/parse round trip with every field and oneof case intact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.alerts.v1 import alerts_pb2
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2, therapy_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2
from langerhans.pump.v1 import pump_pb2

NOW = datetime(2025, 3, 1, 7, 30, tzinfo=UTC)


def _ts(minutes: float = 0) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(NOW + timedelta(minutes=minutes))
    return ts


M = TypeVar("M", bound=Message)


def _roundtrip(message: M) -> M:
    parsed = type(message).FromString(message.SerializeToString())
    assert parsed == message
    return parsed


def test_telemetry_carries_each_payload_kind() -> None:
    payloads: dict[str, Message] = {
        "cgm_reading": device_pb2.HubCgmReading(
            sensor_id="S1",
            measured_at=_ts(),
            glucose=common_pb2.GlucoseQuantity(value=6.2, unit=common_pb2.GLUCOSE_UNIT_MMOL_L),
            backfill=True,
        ),
        "pump_status": device_pb2.PumpStatus(
            reservoir_u=84.5,
            battery_pct=62,
            temp_basal=device_pb2.RunningTempBasal(rate_u_per_h=0.0, remaining_min=25),
        ),
        "pump_history_event": pump_pb2.PumpEvent(
            event_id="e1",
            pump_record_index=912,
            bolus_delivered=pump_pb2.BolusDelivered(
                bolus_id="b1", programmed_insulin_u=2.0, delivered_insulin_u=2.0
            ),
        ),
        "heartbeat": device_pb2.HubHeartbeat(
            pump_link=device_pb2.BLE_LINK_STATE_CONNECTED,
            cgm_link=device_pb2.BLE_LINK_STATE_DISCONNECTED,
            uncertain_command_ids=["cmd-9"],
        ),
        "command_outcome": device_pb2.PumpCommandOutcome(
            command_id="cmd-9",
            state=device_pb2.PUMP_COMMAND_STATE_REJECTED,
            rejection_reason=device_pb2.PUMP_COMMAND_REJECTION_REASON_HARD_LIMIT,
        ),
    }
    for case, payload in payloads.items():
        telemetry = device_pb2.DeviceTelemetry(
            patient_id="p1", device_id="hub-1", hub_sequence=41, recorded_at=_ts()
        )
        getattr(telemetry, case).CopyFrom(payload)
        parsed = _roundtrip(telemetry)
        assert parsed.WhichOneof("payload") == case
        assert getattr(parsed, case) == payload
        # And up the Connect stream wrapped in a hub message.
        hub = _roundtrip(gw_pb2.ConnectRequest(hub_sequence=41, telemetry=telemetry))
        assert hub.WhichOneof("payload") == "telemetry"


def test_validated_reading_keeps_flags_faults_and_unset_rate() -> None:
    reading = cgm_pb2.CgmReading(
        reading_id="r1",
        patient_id="p1",
        measured_at=_ts(),
        glucose_mg_dl=40.0,
        range_flag=cgm_pb2.GLUCOSE_RANGE_FLAG_LOW,
        trend=common_pb2.TREND_NOT_COMPUTABLE,
        noise_level=3,
        quality_score=0.4,
        faults=[cgm_pb2.SENSOR_FAULT_COMPRESSION_LOW, cgm_pb2.SENSOR_FAULT_JUMP],
    )
    parsed = _roundtrip(reading)
    # "Rate unknown" must stay distinguishable from "rate 0 mg/dL/min".
    assert not parsed.HasField("rate_mg_dl_per_min")
    reading.rate_mg_dl_per_min = 0.0
    assert _roundtrip(reading).HasField("rate_mg_dl_per_min")
    assert list(parsed.faults) == [
        cgm_pb2.SENSOR_FAULT_COMPRESSION_LOW,
        cgm_pb2.SENSOR_FAULT_JUMP,
    ]


def test_dosing_decision_with_forecast_and_reasons() -> None:
    line = dosing_pb2.ForecastLine(
        kind=dosing_pb2.FORECAST_KIND_COMBINED,
        start_time=_ts(),
        interval_min=5,
        glucose_mg_dl=[142.0 - 2.5 * i for i in range(48)],
    )
    decision = dosing_pb2.DosingDecision(
        decision_id="d1",
        patient_id="p1",
        decided_at=_ts(),
        mode=common_pb2.LOOP_MODE_CLOSED_LOOP_SMB,
        iob_u=1.25,
        cob_g=20,
        eventual_glucose_mg_dl=95,
        min_predicted_glucose_mg_dl=82,
        forecast=dosing_pb2.Forecast(lines=[line], min_predicted_glucose_mg_dl=82),
        recommendation=dosing_pb2.DosingRecommendation(
            set_temp_basal=dosing_pb2.TempBasalRecommendation(rate_u_per_h=1.4, duration_min=30),
            micro_bolus=dosing_pb2.MicroBolusRecommendation(insulin_u=0.3),
        ),
        reasons=[
            dosing_pb2.DosingReason(
                code=dosing_pb2.DOSING_REASON_CODE_MAX_IOB, value=3.1, limit=3.0
            ),
        ],
    )
    parsed = _roundtrip(decision)
    assert parsed.recommendation.WhichOneof("basal") == "set_temp_basal"
    assert len(parsed.forecast.lines[0].glucose_mg_dl) == 48


def test_therapy_settings_and_alert_events() -> None:
    settings = therapy_pb2.TherapySettings(
        patient_id="p1",
        version=3,
        time_zone="Europe/Berlin",
        basal_schedule=[
            therapy_pb2.BasalSegment(start_min=0, rate_u_per_h=0.8),
            therapy_pb2.BasalSegment(start_min=360, rate_u_per_h=1.1),
        ],
        age_group=common_pb2.AGE_GROUP_CHILD,
        insulin_type=common_pb2.INSULIN_TYPE_ULTRA_RAPID,
        loop_mode=common_pb2.LOOP_MODE_LOW_GLUCOSE_SUSPEND,
    )
    changed = _roundtrip(therapy_pb2.TherapySettingsChanged(settings=settings, changed_by="dr"))
    assert [s.start_min for s in changed.settings.basal_schedule] == [0, 360]

    alert = alerts_pb2.Alert(
        alert_id="a1",
        type=alerts_pb2.ALERT_TYPE_URGENT_LOW,
        severity=alerts_pb2.ALERT_SEVERITY_CRITICAL,
        state=alerts_pb2.ALERT_STATE_ACKNOWLEDGED,
        glucose_mg_dl=52,
    )
    event = _roundtrip(
        alerts_pb2.AlertStateChanged(alert=alert, previous_state=alerts_pb2.ALERT_STATE_NOTIFIED)
    )
    assert event.alert.HasField("glucose_mg_dl")
    _roundtrip(
        alerts_pb2.AlertDelivery(
            alert_id="a1",
            channel=alerts_pb2.ALERT_CHANNEL_WEBHOOK,
            tier=alerts_pb2.ESCALATION_TIER_CAREGIVER,
            attempt=2,
            status=alerts_pb2.DELIVERY_STATUS_FAILED,
        )
    )


def test_unknown_fields_from_a_newer_producer_are_kept() -> None:
    # A v1 consumer that re-publishes a message it does not fully know must not drop fields a
    # newer producer added (field 999 does not exist in our schema).
    known = pump_pb2.PumpEvent(event_id="e1", patient_id="p1").SerializeToString()
    unknown_field = bytes([0xB8, 0x3E, 0x2A])  # field 999, varint 42
    parsed = pump_pb2.PumpEvent.FromString(known + unknown_field)
    assert parsed.event_id == "e1"
    assert parsed.SerializeToString().endswith(unknown_field)


@pytest.mark.parametrize(
    ("enum", "prefix", "expected"),
    [
        (
            common_pb2.Trend,
            "TREND_",
            {
                "DOUBLE_UP",
                "SINGLE_UP",
                "FORTY_FIVE_UP",
                "FLAT",
                "FORTY_FIVE_DOWN",
                "SINGLE_DOWN",
                "DOUBLE_DOWN",
                "NOT_COMPUTABLE",
                "RATE_OUT_OF_RANGE",
            },
        ),
        (
            alerts_pb2.AlertType,
            "ALERT_TYPE_",
            {
                "URGENT_LOW",
                "LOW",
                "HIGH",
                "URGENT_LOW_SOON",
                "RAPID_FALL",
                "RAPID_RISE",
                "NO_CGM_DATA",
                "NOT_LOOPING",
                "PUMP_OCCLUSION",
                "RESERVOIR_LOW",
                "RESERVOIR_CRITICAL",
                "BATTERY_LOW",
                "BATTERY_CRITICAL",
                "PUMP_SUSPENDED_TOO_LONG",
                "DELIVERY_UNCERTAIN",
                "INFUSION_SET_FAILURE_SUSPECTED",
            },
        ),
    ],
)
def test_enums_hold_the_values_the_brief_names(
    enum: EnumTypeWrapper, prefix: str, expected: set[str]
) -> None:
    names = {v.name.removeprefix(prefix) for v in enum.DESCRIPTOR.values}
    assert names - {"UNSPECIFIED"} == expected
