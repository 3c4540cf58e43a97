"""Wire shapes ↔ the kernels' stateless decision API (`kernels.decision`).

`decision_input(request)` turns a `DecideRequest` (the whole state) into a `DecisionInput`;
`decision_to_proto` turns the kernel's `Decision` into a `DosingDecision`. The service builds a
`DecideRequest` from its own tables and goes through the same two functions, so the gRPC
`Decide` and the live engine cannot disagree for the same state.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2, therapy_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as svc_pb2
from langerhans.dosing.v1 import dosing_pb2
from pydantic import ValidationError

from kernels._layout import Action, DoseKind, Mode
from kernels.decision import (
    BasalSegment,
    CarbEntry,
    Decision,
    DecisionInput,
    Dose,
    PumpState,
    TherapySettings,
)
from kernels.increase_margin import (
    FALLING_FASTER_CODE,
    INCREASE_MARGIN_CODE,
    NO_SMB_AFTER_LOW_CODE,
)
from services.runtime.errors import InvalidArgument

__all__ = [
    "DEFAULT_ABSORPTION_MIN",
    "MODE_FROM_PROTO",
    "STALE_AFTER_S",
    "decision_id",
    "decision_input",
    "decision_to_proto",
    "kernel_settings",
    "to_timestamp",
    "ts_seconds",
]

STALE_AFTER_S: Final = 12 * 60  # never act on a reading older than this (brief §6)
DEFAULT_ABSORPTION_MIN: Final = 180.0
_ID_NAMESPACE: Final = uuid.UUID("0c7b4f3e-2d6a-4e0b-9a41-5d2f8c1e7b93")

MODE_FROM_PROTO: Final = {
    common_pb2.LOOP_MODE_OPEN_LOOP: Mode.OPEN_LOOP,
    common_pb2.LOOP_MODE_LOW_GLUCOSE_SUSPEND: Mode.LOW_GLUCOSE_SUSPEND,
    common_pb2.LOOP_MODE_CLOSED_LOOP_TEMP_BASAL: Mode.CLOSED_LOOP,
    common_pb2.LOOP_MODE_CLOSED_LOOP_SMB: Mode.CLOSED_LOOP_SMB,
}
_AGE: Final = {
    common_pb2.AGE_GROUP_CHILD: "child",
    common_pb2.AGE_GROUP_TEEN: "teen",
    common_pb2.AGE_GROUP_ADULT: "adult",
    common_pb2.AGE_GROUP_RESISTANT: "resistant",
    common_pb2.AGE_GROUP_PREGNANT: "pregnant",
}
_INSULIN: Final = {
    common_pb2.INSULIN_TYPE_RAPID_ACTING: "rapid-acting",
    common_pb2.INSULIN_TYPE_RAPID_ACTING_CHILD: "child",
    common_pb2.INSULIN_TYPE_ULTRA_RAPID: "ultra-rapid",
}
_DOSE_KIND: Final = {
    svc_pb2.DOSE_KIND_BOLUS: DoseKind.BOLUS,
    svc_pb2.DOSE_KIND_TEMP_BASAL: DoseKind.TEMP_BASAL,
    svc_pb2.DOSE_KIND_SUSPEND: DoseKind.SUSPEND,
}
R = dosing_pb2
_REASON_CODE: Final = {
    "NO_CGM": R.DOSING_REASON_CODE_NO_CGM,
    "STALE_CGM": R.DOSING_REASON_CODE_STALE_CGM,
    "FUTURE_CGM": R.DOSING_REASON_CODE_FUTURE_CGM,
    "NOISY_CGM": R.DOSING_REASON_CODE_NOISY_CGM,
    "FLAT_CGM": R.DOSING_REASON_CODE_FLAT_CGM,
    "UNCERTAIN_DELIVERY": R.DOSING_REASON_CODE_UNCERTAIN_DELIVERY,
    "OPEN_LOOP": R.DOSING_REASON_CODE_OPEN_LOOP,
    "SUSPEND_ONLY_MODE": R.DOSING_REASON_CODE_MODE_LIMITED,
    "LOW_GLUCOSE": R.DOSING_REASON_CODE_LOW_GLUCOSE_SUSPEND,
    "PREDICTED_LOW": R.DOSING_REASON_CODE_LOW_GLUCOSE_SUSPEND,
    "BELOW_RANGE": R.DOSING_REASON_CODE_BELOW_TARGET,
    "IN_RANGE": R.DOSING_REASON_CODE_IN_RANGE,
    "ABOVE_RANGE": R.DOSING_REASON_CODE_ABOVE_TARGET,
    "MAX_BASAL_LIMIT": R.DOSING_REASON_CODE_MAX_BASAL,
    "MAX_IOB_LIMIT": R.DOSING_REASON_CODE_MAX_IOB,
    "MAX_IOB_ZERO": R.DOSING_REASON_CODE_MAX_IOB,
    "HARD_LIMIT": R.DOSING_REASON_CODE_HARD_LIMIT,
    "NO_INCREASE": R.DOSING_REASON_CODE_MODE_LIMITED,
    "TEMP_KEPT": R.DOSING_REASON_CODE_TEMP_BASAL_UNCHANGED,
    "SMB_BOLUS_RUNNING": R.DOSING_REASON_CODE_BOLUS_IN_PROGRESS,
    "SMB_BOLUS_NEWER": R.DOSING_REASON_CODE_BOLUS_IN_PROGRESS,
    "SMB_TOO_SOON": R.DOSING_REASON_CODE_SMB_SPACING,
    "SMB_LIMITED": R.DOSING_REASON_CODE_MAX_SMB,
    "SENSITIVITY_BOUNDED": R.DOSING_REASON_CODE_SENSITIVITY_ADJUSTED,
    "ZERO_TEMP_CUT": R.DOSING_REASON_CODE_ZERO_TEMP_SHORTENED,
    "RESUME": R.DOSING_REASON_CODE_IN_RANGE,
    INCREASE_MARGIN_CODE: R.DOSING_REASON_CODE_INCREASE_MARGIN,
    NO_SMB_AFTER_LOW_CODE: R.DOSING_REASON_CODE_NO_SMB_AFTER_LOW,
    FALLING_FASTER_CODE: R.DOSING_REASON_CODE_FALLING_FASTER_THAN_EXPECTED,
}


def ts_seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def to_timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def _first_at(segments: list[tuple[int, float]], minute: float) -> float:
    value = segments[0][1]
    for start, v in segments:
        if start <= minute:
            value = v
    return value


def _minute_of_day(now_s: float, time_zone: str) -> float:
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(now_s, UTC).astimezone(ZoneInfo(time_zone or "UTC"))
    return local.hour * 60 + local.minute + local.second / 60


def _utc_offset_min(now_s: float, time_zone: str) -> float:
    from zoneinfo import ZoneInfo

    offset = datetime.fromtimestamp(now_s, UTC).astimezone(ZoneInfo(time_zone or "UTC"))
    delta = offset.utcoffset()
    return 0.0 if delta is None else delta.total_seconds() / 60.0


def kernel_settings(s: therapy_pb2.TherapySettings, now_s: float) -> TherapySettings:
    """Versioned therapy settings → the kernel's settings at `now_s` (ISF/CR/target of now)."""
    if not (s.basal_schedule and s.carb_ratio_schedule and s.sensitivity_schedule):
        raise InvalidArgument("therapy settings need basal, carb ratio and sensitivity schedules")
    minute = _minute_of_day(now_s, s.time_zone)
    isf = _first_at([(x.start_min, x.isf_mg_dl_per_u) for x in s.sensitivity_schedule], minute)
    cr = _first_at([(x.start_min, x.carb_ratio_g_per_u) for x in s.carb_ratio_schedule], minute)
    low, high = 100.0, 120.0
    if s.target_schedule:
        for seg in s.target_schedule:
            if seg.start_min <= minute:
                low, high = seg.low_mg_dl, seg.high_mg_dl
    try:
        return TherapySettings(
            isf_mg_dl_per_u=isf,
            carb_ratio_g_per_u=cr,
            min_bg_mg_dl=low,
            max_bg_mg_dl=high,
            suspend_threshold_mg_dl=s.suspend_threshold_mg_dl or 80.0,
            max_basal_u_per_h=s.max_basal_rate_u_per_h,
            max_iob_u=s.max_iob_u,
            max_bolus_u=s.max_bolus_u,
            age_group=_AGE.get(s.age_group, "adult"),
            insulin=_INSULIN.get(s.insulin_type, "rapid-acting"),
            basal_schedule=tuple(
                BasalSegment(start_min=float(x.start_min), rate_u_per_h=x.rate_u_per_h)
                for x in s.basal_schedule
            ),
            utc_offset_min=_utc_offset_min(now_s, s.time_zone),
        )
    except ValidationError as exc:
        raise InvalidArgument(f"therapy settings out of bounds: {exc.errors()[0]['msg']}") from exc


# The newest reading flagged by cgm-ingestion as a jump, a flat signal, a compression low, a
# warm-up value or a sensor-reported fault is doubtful: it counts as noisy, so the kernel's
# noisy-CGM rule allows no increase (brief §6: never act on doubtful data).
_DOUBTFUL_FAULTS: Final = frozenset(
    {
        cgm_pb2.SENSOR_FAULT_COMPRESSION_LOW,
        cgm_pb2.SENSOR_FAULT_FLAT,
        cgm_pb2.SENSOR_FAULT_JUMP,
        cgm_pb2.SENSOR_FAULT_WARM_UP,
        cgm_pb2.SENSOR_FAULT_DEVICE_REPORTED,
    }
)
_NOISY_LEVEL: Final = 3.0


def decision_input(req: svc_pb2.DecideRequest) -> DecisionInput:
    """The whole state of a `DecideRequest` as the kernel's validated input."""
    if not req.HasField("now") or not req.HasField("settings"):
        raise InvalidArgument("now and settings are required")
    now_s = ts_seconds(req.now)
    mode = MODE_FROM_PROTO.get(req.settings.loop_mode, Mode.OPEN_LOOP)
    readings = sorted(req.cgm_history, key=lambda r: ts_seconds(r.measured_at))
    noise = float(readings[-1].noise_level) if readings else 0.0
    if readings and _DOUBTFUL_FAULTS.intersection(readings[-1].faults):
        noise = max(noise, _NOISY_LEVEL)
    p = req.pump_state
    running: float | None = (
        p.temp_basal_rate_u_per_h if p.HasField("temp_basal_rate_u_per_h") else None
    )
    if p.suspended:
        running = 0.0
    try:
        return DecisionInput(
            now_s=now_s,
            mode=mode,
            cgm_t_s=tuple(ts_seconds(r.measured_at) for r in readings),
            cgm_mg_dl=tuple(min(401.0, max(39.0, r.glucose_mg_dl)) for r in readings),
            cgm_noise_level=min(4.0, noise),
            doses=tuple(
                Dose(
                    t_s=ts_seconds(d.start_time),
                    kind=_DOSE_KIND[d.kind],
                    amount=d.insulin_u if d.kind == svc_pb2.DOSE_KIND_BOLUS else d.rate_u_per_h,
                    duration_min=float(d.duration_min),
                )
                for d in req.doses
                if d.kind in _DOSE_KIND
            ),
            carbs=tuple(
                CarbEntry(
                    t_s=ts_seconds(c.eaten_at),
                    carbs_g=c.carbs_g,
                    absorption_min=float(c.absorption_min or DEFAULT_ABSORPTION_MIN),
                )
                for c in req.carbs
            ),
            settings=kernel_settings(req.settings, now_s),
            pump=PumpState(
                running_temp_rate_u_per_h=running,
                running_temp_remaining_min=float(p.temp_basal_remaining_min),
                bolus_in_progress=p.bolus_in_progress,
                uncertain_delivery=bool(p.uncertain_command_ids),
                last_bolus_s=ts_seconds(p.last_bolus_at) if p.HasField("last_bolus_at") else None,
            ),
            last_smb_s=(
                ts_seconds(p.last_micro_bolus_at) if p.HasField("last_micro_bolus_at") else None
            ),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise InvalidArgument(f"decision input out of bounds at {where}: {err['msg']}") from exc


def decision_id(patient_id: str, reading_id: str, settings_version: int) -> str:
    """Identity of a decision: the same reading under the same settings is the same decision."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{patient_id}|{reading_id}|{settings_version}"))


def idempotency_key(patient_id: str, reading_id: str, action: str) -> str:
    """Deterministic key of an automatic command: one per (patient, reading, action)."""
    digest = hashlib.sha256(f"{patient_id}|{reading_id}|{action}".encode()).hexdigest()
    return digest[:32]


def decision_to_proto(
    decision: Decision,
    req: svc_pb2.DecideRequest,
    *,
    reading_id: str = "",
) -> dosing_pb2.DosingDecision:
    """Kernel decision → `DosingDecision` (not enacted; the service fills enactment)."""
    readings = sorted(req.cgm_history, key=lambda r: ts_seconds(r.measured_at))
    latest = readings[-1] if readings else None
    rid = reading_id or (latest.reading_id if latest is not None else "")
    version = req.settings.version
    msg = dosing_pb2.DosingDecision(
        decision_id=decision_id(req.patient_id, rid, version),
        patient_id=req.patient_id,
        mode=req.settings.loop_mode or common_pb2.LOOP_MODE_OPEN_LOOP,
        settings_version=version,
        reading_id=rid,
        glucose_mg_dl=decision.bg_mg_dl,
        iob_u=decision.iob_u,
        cob_g=decision.cob_g,
        sensitivity_ratio=decision.sensitivity_ratio,
        eventual_glucose_mg_dl=decision.eventual_bg_mg_dl,
        min_predicted_glucose_mg_dl=decision.min_predicted_bg_mg_dl,
        insulin_required_u=decision.insulin_required_u,
        max_safe_basal_rate_u_per_h=decision.max_safe_basal_u_per_h,
    )
    msg.decided_at.CopyFrom(req.now)
    if latest is not None:
        msg.reading_at.CopyFrom(latest.measured_at)
        if latest.HasField("rate_mg_dl_per_min"):
            msg.rate_mg_dl_per_min = latest.rate_mg_dl_per_min
    settings = kernel_settings(req.settings, ts_seconds(req.now))
    msg.target_mg_dl = (settings.min_bg_mg_dl + settings.max_bg_mg_dl) / 2
    fc = decision.forecast
    msg.forecast.eventual_glucose_mg_dl = decision.eventual_bg_mg_dl
    msg.forecast.min_predicted_glucose_mg_dl = decision.min_predicted_bg_mg_dl
    lines = (
        (dosing_pb2.FORECAST_KIND_COMBINED, fc.main),
        (dosing_pb2.FORECAST_KIND_IOB, fc.iob),
        (dosing_pb2.FORECAST_KIND_COB, fc.cob),
        (dosing_pb2.FORECAST_KIND_UAM, fc.uam),
        (dosing_pb2.FORECAST_KIND_ZERO_TEMP, fc.zero_temp),
    )
    for kind, values in lines:
        line = msg.forecast.lines.add(kind=kind, interval_min=fc.step_min)
        line.start_time.CopyFrom(req.now)
        line.glucose_mg_dl.extend(values)
    if fc.main:
        k = min(range(len(fc.main)), key=lambda i: fc.main[i])
        msg.forecast.min_predicted_at.CopyFrom(to_timestamp(fc.start_s + k * fc.step_min * 60))
    rec = msg.recommendation
    if decision.action == Action.TEMP_BASAL and decision.rate_u_per_h <= 0.0:
        rec.suspend.duration_min = int(decision.duration_min)
    elif decision.action == Action.TEMP_BASAL:
        rec.set_temp_basal.rate_u_per_h = decision.rate_u_per_h
        rec.set_temp_basal.duration_min = int(decision.duration_min)
    elif decision.action == Action.CANCEL_TEMP:
        rec.cancel_temp_basal.SetInParent()
    else:
        rec.keep.SetInParent()
    if decision.smb_u > 0:
        rec.micro_bolus.insulin_u = decision.smb_u
    for r in decision.reasons:
        msg.reasons.add(code=_REASON_CODE.get(r.code, 0), message=r.message)
    return msg
