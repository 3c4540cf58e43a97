"""The simulated pump: increments, bolus kinds, temp basal expiry, suspend, faults, limits."""

from __future__ import annotations

import pytest

from sim.pump import Pump, PumpError, PumpFault


def _run(pump: Pump, start: int, minutes: int) -> float:
    return sum(pump.advance(t, 5) for t in range(start, start + minutes, 5))


@pytest.fixture
def therapy(cohort):
    return cohort[25].therapy  # an adult


def test_basal_follows_the_schedule_in_whole_increments(therapy):
    pump = Pump(therapy)
    delivered = [pump.advance(t, 5) for t in range(0, 24 * 60, 5)]
    assert all(round(d / 0.05, 6).is_integer() for d in delivered)
    assert sum(delivered) == pytest.approx(therapy.daily_basal_u, abs=0.05)


def test_temp_basal_expires_back_to_schedule(therapy):
    pump = Pump(therapy)
    pump.set_temp_basal(600, 0.0, 30)
    assert pump.status(600).temp_basal_u_per_h == 0.0
    assert _run(pump, 600, 30) == 0.0
    assert pump.status(630).temp_basal_u_per_h is None
    after = _run(pump, 630, 60)
    assert after == pytest.approx(therapy.basal_at(630), abs=0.05)
    kinds = [e.kind for e in pump.history]
    assert "temp_basal" in kinds
    assert any(e.kind == "temp_basal_end" and e.detail == "expired" for e in pump.history)


def test_standard_extended_and_dual_wave_boluses(therapy):
    pump = Pump(therapy)
    pump.set_temp_basal(0, 0.0, 600)  # isolate the bolus deliveries
    assert pump.bolus(0, 3.0) == 3.0
    assert _run(pump, 0, 5) == pytest.approx(3.0)
    pump.bolus(10, 2.0, "extended", extended_min=60)
    first_hour = [pump.advance(t, 5) for t in range(10, 70, 5)]
    assert sum(first_hour) == pytest.approx(2.0)
    assert max(first_hour) <= 0.2  # spread out, not at once
    pump.bolus(100, 4.0, "dual", extended_min=120, immediate_fraction=0.5)
    assert pump.advance(100, 5) == pytest.approx(2.0)
    assert _run(pump, 105, 125) == pytest.approx(2.0)
    delivered = [e.amount_u for e in pump.history if e.kind == "bolus_delivered"]
    assert delivered == pytest.approx([3.0, 2.0, 4.0])


def test_refuses_commands_beyond_limits_and_changes_nothing(therapy):
    pump = Pump(therapy)
    with pytest.raises(PumpError, match="max bolus"):
        pump.bolus(0, therapy.max_bolus_u + 0.1)
    with pytest.raises(PumpError, match="max basal"):
        pump.set_temp_basal(0, therapy.max_basal_u_per_h + 0.1, 30)
    with pytest.raises(PumpError):
        pump.bolus(0, float("nan"))
    assert pump.history == []
    pump.bolus(0, 1.0)
    with pytest.raises(PumpError, match="already running"):
        pump.bolus(0, 1.0)


def test_suspend_stops_everything_until_resume(therapy):
    pump = Pump(therapy)
    pump.bolus(0, 2.0, "extended", extended_min=60)
    pump.suspend(0)
    assert _run(pump, 0, 60) == 0.0
    with pytest.raises(PumpError, match="suspended"):
        pump.bolus(60, 1.0)
    pump.resume(60)
    assert _run(pump, 60, 60) > 0.0
    assert any(e.kind == "bolus_delivered" and e.detail == "cancelled" for e in pump.history)


def test_occlusion_alarms_only_after_the_missed_volume_builds_up(therapy):
    pump = Pump(therapy, occlusion_threshold_u=2.5)
    pump.start_occlusion()
    t = 0
    to_body = 0.0
    while pump.fault is None and t < 48 * 60:
        to_body += pump.advance(t, 5)
        t += 5
    assert pump.fault is PumpFault.OCCLUSION
    assert to_body == 0.0
    # the alarm came once ≈ 2.5 U had gone missing, not at the first missed pulse
    assert pump.pumped_u == pytest.approx(2.5, abs=0.1)
    with pytest.raises(PumpError, match="fault"):
        pump.bolus(t, 1.0)
    pump.change_infusion_set(t)
    assert pump.status(t).fault is None
    assert _run(pump, t, 60) > 0.0


def test_reservoir_empty_stops_delivery_with_an_alarm(therapy):
    pump = Pump(therapy, reservoir_u=1.0)
    total = _run(pump, 0, 12 * 60)
    assert total == pytest.approx(1.0)
    assert pump.fault is PumpFault.RESERVOIR_EMPTY
    assert any(e.kind == "alarm" and e.detail == "reservoir_empty" for e in pump.history)
