"""Every alert rule, its hysteresis, and the infusion-set detector on hand-made traces."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from services.alerts.model import (
    AlertKind,
    AlertSettings,
    GlucosePoint,
    PatientState,
)
from services.alerts.rules import evaluate, iob_fraction

NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def state_with(values: Sequence[float], step_min: float = 5.0, **kw) -> PatientState:
    start = NOW - timedelta(minutes=step_min * (len(values) - 1))
    state = PatientState("p1", first_seen=start - timedelta(hours=1), **kw)
    for i, v in enumerate(values):
        state.add_glucose(GlucosePoint(start + timedelta(minutes=step_min * i), v))
    return state


def active(
    state: PatientState, settings: AlertSettings | None = None, open_kinds=()
) -> set[AlertKind]:
    result = evaluate(state, settings or AlertSettings(), NOW, open_kinds)
    return {k for k, c in result.items() if c.active}


def test_urgent_low_and_low_are_exclusive() -> None:
    assert AlertKind.URGENT_LOW in active(state_with([60, 57, 54]))
    assert AlertKind.LOW not in active(state_with([60, 57, 54]))
    assert AlertKind.LOW in active(state_with([72, 70, 69]))
    assert not {AlertKind.LOW, AlertKind.URGENT_LOW} & active(state_with([75, 75, 75]))


def test_low_resolves_only_above_80() -> None:
    wobble = state_with([69, 71, 73, 76])
    assert AlertKind.LOW in active(wobble, open_kinds={AlertKind.LOW})
    assert AlertKind.LOW not in active(wobble)
    assert AlertKind.LOW not in active(state_with([75, 78, 81]), open_kinds={AlertKind.LOW})


def test_high_threshold_and_quieter_night() -> None:
    assert AlertKind.HIGH in active(state_with([240, 250, 260]))
    night = AlertSettings(time_zone="UTC", night_start=time(13, 0), night_end=time(15, 0))
    assert AlertKind.HIGH not in active(state_with([240, 250, 260]), night)
    assert AlertKind.HIGH in active(state_with([300, 305, 310]), night)
    custom = AlertSettings(high_mg_dl=180, high_resolve_mg_dl=160)
    assert AlertKind.HIGH in active(state_with([170, 180, 190]), custom)


def test_stale_reading_raises_no_glucose_alert() -> None:
    state = state_with([50, 50, 50])
    assert AlertKind.URGENT_LOW in active(state)
    later = evaluate(state, AlertSettings(), NOW + timedelta(minutes=15))
    assert not later[AlertKind.NO_CGM_DATA].active
    assert AlertKind.URGENT_LOW not in later
    much_later = evaluate(state, AlertSettings(), NOW + timedelta(minutes=21))
    assert much_later[AlertKind.NO_CGM_DATA].active


def test_rapid_fall_and_rise_with_hysteresis() -> None:
    assert AlertKind.RAPID_FALL in active(state_with([200, 184, 168, 152]))
    assert AlertKind.RAPID_RISE in active(state_with([100, 116, 132, 148]))
    slowing = state_with([200, 190, 178, 166])  # -2.27 mg/dL/min
    assert AlertKind.RAPID_FALL not in active(slowing)
    assert AlertKind.RAPID_FALL in active(slowing, open_kinds={AlertKind.RAPID_FALL})


def test_urgent_low_soon_by_momentum_and_by_forecast() -> None:
    falling = state_with([110, 100, 90, 80])  # -2/min: 80 - 40 = 40 in 20 min
    assert AlertKind.URGENT_LOW_SOON in active(falling)
    steady = state_with([82, 81, 80, 80])
    assert AlertKind.URGENT_LOW_SOON not in active(steady)
    steady.forecast = [(0, 80), (5, 72), (10, 63), (15, 54), (20, 50)]
    steady.forecast_time = NOW
    assert AlertKind.URGENT_LOW_SOON in active(steady)
    steady.forecast_time = NOW - timedelta(minutes=30)  # stale forecast: momentum again
    assert AlertKind.URGENT_LOW_SOON not in active(steady)


def test_pump_and_loop_rules() -> None:
    state = state_with([120, 120, 120])
    state.last_loop_time = NOW - timedelta(minutes=31)
    state.reservoir_u = 4.5
    state.battery_pct = 25
    state.suspended_since = NOW - timedelta(minutes=61)
    state.occlusion_since = NOW - timedelta(minutes=1)
    state.delivery_uncertain_since = NOW
    found = active(state)
    assert {
        AlertKind.NOT_LOOPING,
        AlertKind.RESERVOIR_VERY_LOW,
        AlertKind.BATTERY_LOW,
        AlertKind.SUSPENDED_TOO_LONG,
        AlertKind.OCCLUSION,
        AlertKind.DELIVERY_UNCERTAIN,
    } <= found
    assert AlertKind.RESERVOIR_LOW not in found
    assert AlertKind.BATTERY_VERY_LOW not in found
    state.reservoir_u, state.battery_pct = 9.0, 15
    assert {AlertKind.RESERVOIR_LOW, AlertKind.BATTERY_VERY_LOW} <= active(state)


def test_disabled_kinds_are_not_evaluated() -> None:
    settings = AlertSettings(disabled=frozenset({AlertKind.HIGH}))
    assert AlertKind.HIGH not in evaluate(state_with([300] * 3), settings, NOW)


def test_iob_curve_is_monotone_from_one_to_zero() -> None:
    values = [iob_fraction(m) for m in range(0, 370, 10)]
    assert values[0] == 1.0
    assert values[-1] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert 0.4 < iob_fraction(120) < 0.8


def test_infusion_set_alert_stays_open_until_glucose_comes_down() -> None:
    open_kinds = {AlertKind.INFUSION_SET_FAILURE}
    plateau = state_with([240, 242, 241, 240])  # no fresh evidence, still high
    assert AlertKind.INFUSION_SET_FAILURE in active(plateau, open_kinds=open_kinds)
    assert AlertKind.INFUSION_SET_FAILURE not in active(plateau)
    coming_down = state_with([240, 230, 210, 195])  # fell 45 mg/dL from its peak
    assert AlertKind.INFUSION_SET_FAILURE not in active(coming_down, open_kinds=open_kinds)
