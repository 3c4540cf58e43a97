"""Simulated pump and CGM drivers on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from services.runtime.clock import FixedClock
from sim.drivers import SimulatedCgmDriver, SimulatedPerson, SimulatedPumpDriver
from sim.pump import PumpError

START = datetime(2026, 3, 1, 6, 2, tzinfo=UTC)


@pytest.fixture
def setup(cohort):
    clock = FixedClock(START)
    person = SimulatedPerson(cohort[25], clock, seed=3)
    return clock, person, SimulatedCgmDriver(person), SimulatedPumpDriver(person)


def test_the_person_lives_as_fast_as_the_clock(setup):
    clock, _person, cgm, _pump = setup
    latest = cgm.latest()
    assert latest is not None
    assert latest.timestamp <= START
    assert START - latest.timestamp < timedelta(minutes=10)
    clock.advance(3 * 3600)
    new = cgm.readings_since(latest.timestamp)
    assert 30 <= len(new) <= 36  # 3 h of 5-minute readings, minus any dropouts
    stamps = [r.timestamp for r in new]
    assert all((b - a) % timedelta(minutes=5) == timedelta(0) for a, b in pairwise(stamps))
    assert all(40 <= r.glucose_mg_dl <= 400 for r in new)
    # breakfast happened, with the person's own bolus through the pump
    assert any(e.kind == "bolus" for e in _pump.history_since(START))


def test_pump_commands_take_effect_and_show_in_history(setup):
    clock, _person, _cgm, pump = setup
    pump.set_temp_basal(0.0, 30)
    status = pump.status()
    assert status.temp_basal_u_per_h == 0.0
    clock.advance(31 * 60)
    assert pump.status().temp_basal_u_per_h is None
    with pytest.raises(PumpError):
        pump.deliver_bolus(1000.0)
    pump.suspend()
    assert pump.status().suspended
    pump.resume()
    kinds = [e.kind for e in pump.history_since(START - timedelta(minutes=5))]
    assert kinds.index("temp_basal") < kinds.index("suspend") < kinds.index("resume")
