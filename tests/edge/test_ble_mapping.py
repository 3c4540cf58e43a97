"""Bluetooth values to driver types and pump commands to IDS commands."""

from datetime import timedelta

import pytest

from edge.ble import CodecError, ids
from edge.ble.cgms import CgmMeasurement, SensorStatus
from edge.ble.mder import MderNumber, Special
from edge.drivers.base import GlucoseFlag
from edge.drivers.ble_mapping import ids_command_for, reading_from_measurement
from tests.edge._commands import MANUAL, T0, make_command


def test_measurement_to_reading():
    m = CgmMeasurement(MderNumber(1234, -1), 95, trend_mg_dl_per_min=MderNumber(-15, -1))
    r = reading_from_measurement(m, sensor_id="s1", session_start=T0)
    assert r.glucose_mg_dl == pytest.approx(123.4)
    assert r.timestamp == T0 + timedelta(minutes=95)
    assert r.sequence == 95
    assert r.trend_mg_dl_per_min == pytest.approx(-1.5)
    assert r.flag is None
    low = CgmMeasurement(MderNumber(special=Special.NAN), 100, SensorStatus(warning=0x40))
    r = reading_from_measurement(low, sensor_id="s1", session_start=T0)
    assert r.glucose_mg_dl is None
    assert r.flag is GlucoseFlag.LOW
    high = CgmMeasurement(MderNumber(special=Special.POSITIVE_INFINITY), 105)
    assert reading_from_measurement(high, sensor_id="s1", session_start=T0).flag is GlucoseFlag.HIGH


def test_pump_commands_to_ids():
    temp = ids_command_for(make_command(sequence=1, issued_at=T0, rate_u_per_h=1.35))
    assert temp == ids.SetTbr(
        ids.TbrType.ABSOLUTE, 1.35, 30, context=ids.DeliveryContext.AP_CONTROLLER
    )
    manual_temp = ids_command_for(
        make_command(sequence=1, issued_at=T0, rate_u_per_h=1.0, origin=MANUAL)
    )
    assert isinstance(manual_temp, ids.SetTbr)
    assert manual_temp.context is ids.DeliveryContext.REMOTE_CONTROL
    dual = make_command(sequence=1, issued_at=T0, bolus_u=3.35, origin=MANUAL)
    dual.deliver_bolus.immediate_pct = 40
    dual.deliver_bolus.extended_duration_min = 120
    bolus = ids_command_for(dual)
    assert isinstance(bolus, ids.SetBolus)
    assert bolus.bolus_type is ids.BolusType.MULTIWAVE
    # 40 % of 3.35 = 1.34; the extended part is what is left, exactly
    assert (bolus.fast_amount_u, bolus.extended_amount_u) == (1.34, 2.01)
    assert ids.decode_command(ids.encode_command(bolus, e2e_counter=1), e2e=True)[0] == bolus
    smb = ids_command_for(make_command(sequence=1, issued_at=T0, bolus_u=0.35))
    assert isinstance(smb, ids.SetBolus)
    assert smb.bolus_type is ids.BolusType.FAST
    suspend = make_command(sequence=1, issued_at=T0, rate_u_per_h=None)
    suspend.suspend.SetInParent()
    assert ids_command_for(suspend) == ids.SetTherapyControlState(ids.TherapyControlState.PAUSE)
    with pytest.raises(CodecError):
        ids_command_for(make_command(sequence=1, issued_at=T0, bolus_u=0.125))
