"""The Bluetooth CGM and pump drivers against the simulated CGMS/IDS peripherals."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from edge.ble.peripheral_sim import (
    CGM_MEASUREMENT,
    IDD_COMMAND_CP,
    IDD_HISTORY,
    SimulatedCgmPeripheral,
    SimulatedPumpPeripheral,
)
from edge.drivers.base import (
    BolusShape,
    CgmDriver,
    DeliveryUnconfirmedError,
    GlucoseFlag,
    PumpDriver,
    PumpEventKind,
    PumpRefusedError,
)
from edge.drivers.ble_cgm import BleCgmDriver
from edge.drivers.ble_pump import BlePumpDriver, CommandNotSentError, PumpDriverError
from edge.uncertain import DeliveryState, UncertainDeliveryTracker
from services.runtime.clock import FixedClock
from tests.edge._commands import MANUAL, make_command

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def glucose(offset_min: int) -> float:
    # falls 2 mg/dL per minute from 180 to below the sensor range, then stays there
    return 180.0 - 2.0 * offset_min


def paused(tracker: UncertainDeliveryTracker) -> bool:
    return tracker.automatic_dosing_paused


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def clock():
    return FixedClock(START)


@pytest.fixture
def cgm(clock):
    return SimulatedCgmPeripheral(clock, glucose, session_start=START)


@pytest.fixture
def pump(clock):
    return SimulatedPumpPeripheral(clock)


async def advance(clock, device, minutes: int) -> None:
    for _ in range(minutes):
        clock.advance(60)
        device.tick()
    await settle()


# ---------------------------------------------------------------- CGM


async def test_readings_flow_with_values_trend_and_quality(clock, cgm):
    driver = BleCgmDriver(cgm, sensor_id="cgm-1", response_timeout_s=1)
    assert isinstance(driver, CgmDriver)
    cgm.tick()  # offset 0 measured before the hub connects: it arrives by backfill
    first = await driver.readings_since(-1)
    assert [(r.sequence, r.glucose_mg_dl, r.backfill) for r in first] == [(0, 180.0, True)]

    await advance(clock, cgm, 10)
    live = await driver.readings_since(0)
    assert [r.sequence for r in live] == [5, 10]
    r5 = live[0]
    assert r5.glucose_mg_dl == glucose(5)
    assert r5.trend_mg_dl_per_min == pytest.approx(-2.0)
    assert r5.quality_pct == 95.0
    assert r5.timestamp == START + timedelta(minutes=5)
    assert r5.sensor_id == "cgm-1"
    assert not r5.backfill
    assert r5.flag is None

    await advance(clock, cgm, 65)  # 180 − 2·t is 40 at t = 70 and below the range at 75
    at_limit, low = await driver.readings_since(65)
    assert at_limit.sequence == 70
    assert at_limit.flag is None
    assert at_limit.glucose_mg_dl == 40.0
    assert low.sequence == 75
    assert low.flag is GlucoseFlag.LOW
    assert low.glucose_mg_dl == 40.0


async def test_link_drop_reconnect_backfills_without_duplicates(clock, cgm):
    driver = BleCgmDriver(cgm, sensor_id="cgm-1", response_timeout_s=1)
    await driver.readings_since(-1)
    await advance(clock, cgm, 20)
    cgm.drop_link()
    await advance(clock, cgm, 30)  # measured while nobody listens
    assert not driver.link_up

    readings = await driver.readings_since(-1)
    sequences = [r.sequence for r in readings]
    assert sequences == list(range(0, 51, 5))  # nothing lost, nothing twice
    assert {r.sequence for r in readings if r.backfill} >= {25, 30, 35, 40, 45, 50}
    assert all(r.glucose_mg_dl == glucose(r.sequence) for r in readings)
    assert cgm.connects == 2

    await advance(clock, cgm, 5)
    again = await driver.readings_since(-1)
    assert [r.sequence for r in again] == list(range(0, 56, 5))


async def test_reconnect_fails_while_sensor_away_then_recovers(clock, cgm):
    driver = BleCgmDriver(cgm, sensor_id="cgm-1", response_timeout_s=1, connect_attempts=2)
    await driver.readings_since(-1)
    cgm.drop_link()
    cgm.link_available = False
    await advance(clock, cgm, 15)
    with pytest.raises(ConnectionError, match="link down"):
        await driver.readings_since(-1)
    cgm.link_available = True
    assert [r.sequence for r in await driver.readings_since(-1)] == [0, 5, 10, 15]


async def test_crc_corrupted_measurement_is_rejected_then_backfilled(clock, cgm):
    driver = BleCgmDriver(cgm, sensor_id="cgm-1", response_timeout_s=1)
    cgm.tick()
    await driver.readings_since(-1)
    cgm.corrupt_next(CGM_MEASUREMENT)
    await advance(clock, cgm, 5)  # offset 5 arrives with a flipped octet
    assert driver.decode_errors == 1
    assert "CRC" in driver.last_error
    await advance(clock, cgm, 5)  # offset 10 arrives fine, after the gap
    readings = await driver.readings_since(-1)
    assert [r.sequence for r in readings] == [0, 5, 10]
    assert [r.glucose_mg_dl for r in readings] == [glucose(0), glucose(5), glucose(10)]
    assert readings[1].backfill
    assert not readings[2].backfill


# ---------------------------------------------------------------- pump


def pump_driver(pump, clock, timeout_s: float = 0.2) -> BlePumpDriver:
    return BlePumpDriver(pump, clock=clock, response_timeout_s=timeout_s)


async def test_temp_basal_and_bolus_are_executed_and_confirmed(clock, pump):
    driver = pump_driver(pump, clock)
    assert isinstance(driver, PumpDriver)
    ack = await driver.set_temp_basal(1.35, 30)
    assert ack.pump_time == START
    status = await driver.status()
    assert status.temp_basal_u_per_h == 1.35
    assert status.temp_basal_remaining_min == 30
    assert status.scheduled_basal_u_per_h == 0.8
    assert not status.suspended

    ack = await driver.set_temp_basal(0.0, 60)  # replaces the running one
    assert pump.tbr is not None
    assert pump.tbr.rate_u_per_h == 0.0

    ack = await driver.bolus(BolusShape(2.35))
    assert ack.accepted_u == 2.35
    assert ack.reference == "1"
    status = await driver.status()
    assert status.bolus_in_progress
    assert status.reservoir_u == 200.0
    assert status.last_bolus_at == START

    await advance(clock, pump, 5)
    status = await driver.status()
    assert not status.bolus_in_progress
    assert status.reservoir_u == pytest.approx(197.6, abs=0.1)

    history = await driver.history_since(-1)
    kinds = [(e.kind, e.amount_u, e.duration_min) for e in history]
    assert kinds == [
        (PumpEventKind.TEMP_BASAL_STARTED, 1.35, 30),
        (PumpEventKind.TEMP_BASAL_ENDED, 0.0, 0),
        (PumpEventKind.TEMP_BASAL_STARTED, 0.0, 60),
        (PumpEventKind.BOLUS_PROGRAMMED, 2.35, 0),
        (PumpEventKind.BOLUS_DELIVERED, 2.35, 0),
    ]
    assert history[-1].timestamp == START + timedelta(minutes=2)  # 2.35 U at 1.5 U/min
    assert status.last_history_sequence == max(r.sequence for r in pump.history)
    assert await driver.history_since(status.last_history_sequence) == []


async def test_suspend_resume_and_cancel(clock, pump):
    driver = pump_driver(pump, clock)
    await driver.set_temp_basal(2.0, 30)
    await driver.cancel_temp_basal()
    assert pump.tbr is None
    await driver.suspend()
    assert (await driver.status()).suspended
    with pytest.raises(PumpRefusedError, match="PROCEDURE_NOT_APPLICABLE"):
        await driver.bolus(BolusShape(1.0))
    await driver.resume()
    assert not (await driver.status()).suspended
    kinds = [e.kind for e in await driver.history_since(-1)]
    assert kinds[-2:] == [PumpEventKind.SUSPENDED, PumpEventKind.RESUMED]


async def test_refused_command_delivers_nothing(clock, pump):
    driver = pump_driver(pump, clock)
    with pytest.raises(PumpRefusedError, match="PARAMETER_OUT_OF_RANGE"):
        await driver.bolus(BolusShape(30.0))
    with pytest.raises(CommandNotSentError, match=r"finer than|not exactly"):
        await driver.set_temp_basal(20.46, 30)  # not representable: refused, never rounded
    assert pump.executed == []
    assert pump.boluses == []


@pytest.mark.parametrize("delivered", [True, False])
async def test_lost_answer_is_unconfirmed_and_history_reconciles(clock, pump, tmp_path, delivered):
    driver = pump_driver(pump, clock)
    tracker = UncertainDeliveryTracker(tmp_path / "uncertain.db")
    cmd = make_command(sequence=1, issued_at=START, origin=MANUAL, bolus_u=3.2, lifetime_s=300)
    if delivered:
        pump.lose_next(IDD_COMMAND_CP)  # the pump doses; its answer never arrives
    else:
        pump.corrupt_next_write(IDD_COMMAND_CP)  # the pump rejects the frame; nothing happens
    tracker.begin(cmd, START)
    with pytest.raises(DeliveryUnconfirmedError, match="no answer") as info:
        await driver.bolus(BolusShape(3.2))
    assert not isinstance(info.value, PumpRefusedError)
    tracker.unconfirmed(cmd.command_id, str(info.value))
    assert paused(tracker)
    assert driver.unconfirmed == 1

    await advance(clock, pump, 5)
    history = await driver.history_since(-1)  # reconnects by itself
    (resolution,) = tracker.reconcile(history, complete_through=pump.now())
    if delivered:
        assert resolution.state is DeliveryState.DELIVERED
        assert resolution.delivered_u == pytest.approx(3.2, abs=0.1)
        assert pump.delivered_bolus_u == pytest.approx(3.2, abs=0.1)
    else:
        assert resolution.state is DeliveryState.ABSENT
        assert pump.delivered_bolus_u == 0
    assert not paused(tracker)
    tracker.close()


async def test_corrupted_answer_is_rejected_and_unconfirmed(clock, pump):
    driver = pump_driver(pump, clock)
    pump.corrupt_next(IDD_COMMAND_CP)
    with pytest.raises(DeliveryUnconfirmedError, match="CRC"):
        await driver.suspend()
    assert driver.decode_errors == 1
    history = await driver.history_since(-1)
    assert [e.kind for e in history] == [PumpEventKind.SUSPENDED]  # it did happen


async def test_late_answer_is_never_taken_for_the_next_command(clock, pump):
    driver = pump_driver(pump, clock, timeout_s=0.1)
    pump.delay(IDD_COMMAND_CP, 0.3)
    with pytest.raises(DeliveryUnconfirmedError):
        await driver.set_temp_basal(1.0, 30)
    pump.delay(IDD_COMMAND_CP, 0.0)
    # The first answer is still in the air; the second command must wait for its own answer.
    ack = await driver.set_temp_basal(1.5, 30)
    assert ack.pump_time == START
    await asyncio.sleep(0.4)
    assert pump.tbr is not None
    assert pump.tbr.rate_u_per_h == 1.5
    assert pump.connects == 2  # the link was reset after the lost answer


async def test_delayed_answer_within_the_timeout_confirms(clock, pump):
    driver = pump_driver(pump, clock, timeout_s=1.0)
    pump.delay(IDD_COMMAND_CP, 0.1)
    ack = await driver.bolus(BolusShape(1.5, immediate_pct=50, extended_duration_min=60))
    assert ack.accepted_u == 1.5
    (bolus,) = pump.boluses
    assert (bolus.fast_u, bolus.extended_u, bolus.duration_min) == (0.75, 0.75, 60)


async def test_link_down_means_not_sent(clock, pump):
    driver = pump_driver(pump, clock)
    pump.link_available = False
    with pytest.raises(CommandNotSentError, match="not sent"):
        await driver.bolus(BolusShape(1.0))
    with pytest.raises(ConnectionError):
        await driver.status()
    assert pump.executed == []


async def test_link_drop_while_waiting_is_unconfirmed(clock, pump):
    driver = pump_driver(pump, clock, timeout_s=1.0)
    pump.delay(IDD_COMMAND_CP, 0.2)
    task = asyncio.create_task(driver.bolus(BolusShape(1.0)))
    await asyncio.sleep(0.05)
    pump.drop_link()
    with pytest.raises(DeliveryUnconfirmedError, match="link"):
        await task
    pump.delay(IDD_COMMAND_CP, 0.0)
    history = await driver.history_since(-1)
    assert [e.kind for e in history][:1] == [PumpEventKind.BOLUS_PROGRAMMED]


async def test_corrupted_history_record_rejects_the_whole_read(clock, pump):
    driver = pump_driver(pump, clock)
    await driver.bolus(BolusShape(1.0))
    pump.corrupt_next(IDD_HISTORY)
    with pytest.raises(PumpDriverError, match="CRC"):
        await driver.history_since(-1)
    history = await driver.history_since(-1)  # read again, whole
    assert [e.kind for e in history] == [PumpEventKind.BOLUS_PROGRAMMED]
