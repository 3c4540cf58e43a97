"""Translation between the Bluetooth SIG values and the driver interface's types.

Used by the Bluetooth driver: CGM Measurement records become `CgmReading`s, and the actions of
a verified `PumpCommand` become IDS Command Control Point commands. Insulin amounts are split
and encoded exactly (to 0.01 U) or refused — never rounded silently.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from langerhans.device.v1 import device_pb2

from edge.ble import ids
from edge.ble.cgms import CgmMeasurement
from edge.ble.errors import CodecError
from edge.ble.mder import MderNumber, Special
from edge.drivers.base import CgmReading, GlucoseFlag

__all__ = ["ids_command_for", "reading_from_measurement"]

_HUNDREDTH = Decimal("0.01")
_AP = ids.DeliveryContext.AP_CONTROLLER
_REMOTE = ids.DeliveryContext.REMOTE_CONTROL


def _finite(n: MderNumber | None) -> float | None:
    return None if n is None or not n.is_finite else float(n.decimal)


def reading_from_measurement(
    m: CgmMeasurement, *, sensor_id: str, session_start: datetime
) -> CgmReading:
    """A CGM Measurement record as a reading; `session_start` is the session start in UTC.

    NaN/NRes glucose becomes None (no value); the sensor's "lower/higher than the device can
    process" annunciations and ±INFINITY become LOW/HIGH flags.
    """
    if session_start.tzinfo is None:
        raise ValueError("session_start must be timezone-aware")
    glucose = m.glucose_mg_dl
    flag = None
    if (
        m.sensor_status.result_lower_than_device_can_process
        or glucose.special is Special.NEGATIVE_INFINITY
    ):
        flag = GlucoseFlag.LOW
    elif (
        m.sensor_status.result_higher_than_device_can_process
        or glucose.special is Special.POSITIVE_INFINITY
    ):
        flag = GlucoseFlag.HIGH
    return CgmReading(
        sensor_id=sensor_id,
        sequence=m.time_offset_min,
        timestamp=session_start + timedelta(minutes=m.time_offset_min),
        glucose_mg_dl=_finite(glucose),
        flag=flag,
        trend_mg_dl_per_min=_finite(m.trend_mg_dl_per_min),
        quality_pct=_finite(m.quality_pct),
    )


def _exact_units(value: float, what: str) -> Decimal:
    exact = Decimal(repr(value))
    if exact != exact.quantize(_HUNDREDTH):
        raise CodecError(f"{what} {value} U is finer than 0.01 U")
    return exact


def ids_command_for(command: device_pb2.PumpCommand) -> ids.Command:
    """The IDS Command Control Point command carrying out a verified pump command."""
    automatic = command.origin == device_pb2.PumpCommandOrigin.PUMP_COMMAND_ORIGIN_AUTOMATIC
    action = command.WhichOneof("action")
    if action == "set_temp_basal":
        t = command.set_temp_basal
        return ids.SetTbr(
            ids.TbrType.ABSOLUTE,
            float(_exact_units(t.rate_u_per_h, "temp basal rate")),
            t.duration_min,
            context=(
                ids.DeliveryContext.AP_CONTROLLER
                if automatic
                else ids.DeliveryContext.REMOTE_CONTROL
            ),
        )
    if action == "cancel_temp_basal":
        return ids.CancelTbr()
    if action == "suspend":
        return ids.SetTherapyControlState(ids.TherapyControlState.PAUSE)
    if action == "resume":
        return ids.SetTherapyControlState(ids.TherapyControlState.RUN)
    if action == "deliver_bolus":
        b = command.deliver_bolus
        total = _exact_units(b.insulin_u, "bolus")
        pct = Decimal(repr(b.immediate_pct))
        fast = (total * pct / 100).quantize(_HUNDREDTH, rounding=ROUND_HALF_EVEN)
        extended = total - fast  # the parts always add up to exactly the total
        if extended == 0:
            bolus_type, duration = ids.BolusType.FAST, 0
        elif fast == 0:
            bolus_type, duration = ids.BolusType.EXTENDED, b.extended_duration_min
        else:
            bolus_type, duration = ids.BolusType.MULTIWAVE, b.extended_duration_min
        return ids.SetBolus(
            bolus_type,
            float(fast),
            float(extended),
            duration,
            activation_type=ids.ActivationType.COMMANDED,
        )
    raise CodecError(f"no IDS command for action {action!r}")
