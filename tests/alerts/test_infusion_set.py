"""The infusion-set failure detector on constructed traces (the cohort figures: the bench)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from services.alerts.infusion_set import (
    InfusionSetParams,
    infusion_set_evidence,
    infusion_set_features,
    insulin_effect_mg_dl,
)
from services.alerts.model import (
    AlertKind,
    AlertSettings,
    CarbEntry,
    GlucosePoint,
    InsulinDose,
    PatientState,
)
from services.alerts.rules import evaluate

NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
SETTINGS = AlertSettings(isf_mg_dl_per_u=50, carb_ratio_g_per_u=10)


def trace(values: Sequence[float], doses_u: float = 0.5) -> PatientState:
    """Readings every 5 min ending at NOW, and the loop's extra insulin every 15 min for 3 h."""
    start = NOW - timedelta(minutes=5 * (len(values) - 1))
    state = PatientState("p1", first_seen=start - timedelta(hours=1))
    for i, v in enumerate(values):
        state.add_glucose(GlucosePoint(start + timedelta(minutes=5 * i), v))
    if doses_u > 0:
        state.doses = [
            InsulinDose(NOW - timedelta(minutes=m), doses_u, correction=True)
            for m in range(180, 0, -15)
        ]
    return state


def line(first: float, last: float, minutes: int = 240) -> list[float]:
    # 4 h of readings: the detector's window, judged at consecutive readings, fits in it.
    n = minutes // 5
    return [first + (last - first) * i / n for i in range(n + 1)]


def raised(state: PatientState) -> bool:
    verdict = evaluate(state, SETTINGS, NOW)[AlertKind.INFUSION_SET_FAILURE]
    return verdict.active


def test_glucose_creeping_up_while_the_loop_adds_insulin_raises_the_alert() -> None:
    # cannula out at night: the lost basal lets glucose creep up, the loop's extra insulin
    # (4 U in 3 h, a 200 mg/dL drop by ISF) does nothing
    state = trace(line(110, 200))
    evidence = infusion_set_evidence(state, SETTINGS, NOW)
    assert evidence is not None
    assert evidence.expected_change_mg_dl < -20
    assert evidence.unexplained_rise_mg_dl >= 80
    assert raised(state)
    message = evaluate(state, SETTINGS, NOW)[AlertKind.INFUSION_SET_FAILURE].message
    for advice in ("infusion site", "tubing", "ketones", "pen or syringe"):
        assert advice in message


def test_the_expected_drop_comes_from_the_kernel_insulin_curve() -> None:
    state = trace(line(110, 200))
    early, early_u = insulin_effect_mg_dl(
        state, SETTINGS, NOW - timedelta(hours=3), NOW - timedelta(hours=2)
    )
    late, late_u = insulin_effect_mg_dl(state, SETTINGS, NOW - timedelta(hours=2), NOW)
    assert 0 < early_u < late_u < 4.0  # doses still acting; nothing counted twice
    assert late == pytest.approx(-50 * late_u)
    assert early > late


@pytest.mark.parametrize(
    "case",
    [
        "insulin_working",
        "no_extra_insulin",
        "post_meal_rise",
        "unannounced_meal",
        "after_a_low",
        "after_a_low_170_min_ago",
        "suspended",
        "set_changed",
        "below_160",
        "flat_now",
    ],
)
def test_not_suspected(case: str) -> None:
    state = trace(line(110, 200))
    if case == "insulin_working":  # the same insulin brings glucose down
        state = trace(line(240, 170))
    elif case == "no_extra_insulin":  # a slow drift on basal alone: nothing says insulin fails
        state = trace(line(150, 175), doses_u=0.0)
    elif case == "post_meal_rise":  # announced meal with its bolus, rising then levelling off
        state = trace([110] * 12 + line(110, 215, 90) + [215, 217, 218] * 4)
        meal_at = NOW - timedelta(minutes=125)
        state.carbs.append(CarbEntry(meal_at, 60, 180))
        state.doses.append(InsulinDose(meal_at, 6.0, correction=False))
    elif case == "unannounced_meal":  # sharp rise: the loop answers with micro-boluses
        state = trace([110] * 25 + line(110, 230, 60))
    elif case == "after_a_low":  # rebound after treating a low 130 min ago
        state.glucose[-27] = GlucosePoint(state.glucose[-27].time, 65)
    elif case == "after_a_low_170_min_ago":  # the rescue carbs' rise is still in the 2-h window
        state.glucose[-35] = GlucosePoint(state.glucose[-35].time, 65)
    elif case == "suspended":
        state.suspended_since = NOW - timedelta(minutes=30)
    elif case == "set_changed":
        state.set_changed_at = NOW - timedelta(minutes=30)
    elif case == "below_160":
        state = trace(line(90, 155))
    elif case == "flat_now":
        state = trace([*line(110, 190, 160), 190, 189, 190, 189, 189])
    assert infusion_set_evidence(state, SETTINGS, NOW) is None
    assert not raised(state)


def test_features_report_what_the_verdict_used() -> None:
    state = trace(line(110, 200))
    f = infusion_set_features(state, SETTINGS, NOW, InfusionSetParams().window)
    assert f is not None
    assert f.observed_change_mg_dl == pytest.approx(45, abs=1)  # 90 mg/dL over 4 h, 2-h window
    assert f.rise_last_hour_mg_dl == pytest.approx(22.5, abs=1)
    assert f.residual_mg_dl == pytest.approx(f.observed_change_mg_dl - f.insulin_effect_mg_dl)
    # a looser setting catches a smaller residual, a stricter one does not
    strict = InfusionSetParams(min_residual_mg_dl=f.residual_mg_dl + 1)
    assert infusion_set_evidence(state, SETTINGS, NOW, strict) is None


def test_stale_reading_gives_no_verdict() -> None:
    state = trace(line(110, 200))
    assert infusion_set_evidence(state, SETTINGS, NOW + timedelta(minutes=20)) is None


def test_one_reading_over_the_line_is_not_enough_two_in_a_row_are() -> None:
    # Glucose creeping up against the loop's insulin; only the latest reading reaches 160.
    once = trace([*line(100, 157, 225), 158, 165])
    assert once.glucose[-2].glucose_mg_dl < 160 <= once.glucose[-1].glucose_mg_dl
    assert infusion_set_evidence(once, SETTINGS, NOW) is None
    # The same creep, 5 min on: the verdict has held at two consecutive readings.
    held = trace([*line(100, 157, 220), 158, 165, 167])
    assert infusion_set_evidence(held, SETTINGS, NOW) is not None
    assert raised(held)


def test_insulin_pumped_before_a_set_change_is_not_expected_to_act() -> None:
    # The loop's insulin went into the failed set; glucose still creeps up just after the new
    # set. Counting the lost insulin would "expect" it to act and raise the alert again.
    state = trace(line(110, 200), doses_u=0.0)
    state.doses = [
        InsulinDose(NOW - timedelta(minutes=m), 0.5, correction=True) for m in range(300, 134, -15)
    ]
    assert infusion_set_evidence(state, SETTINGS, NOW) is not None
    state.set_changed_at = NOW - timedelta(minutes=130)
    start = NOW - InfusionSetParams().window
    assert insulin_effect_mg_dl(state, SETTINGS, start, NOW) == (0.0, 0.0)
    assert infusion_set_evidence(state, SETTINGS, NOW) is None
    # Insulin pumped through the new set counts as before.
    state.doses.append(InsulinDose(NOW - timedelta(minutes=100), 2.0, correction=True))
    effect_mg_dl, absorbed_u = insulin_effect_mg_dl(state, SETTINGS, start, NOW)
    assert absorbed_u > 0.5
    assert effect_mg_dl == pytest.approx(-absorbed_u * SETTINGS.isf_mg_dl_per_u)


def _meal_trace(
    values: Sequence[float], meal_minutes_ago: int, bolus_u: float = 6.0
) -> PatientState:
    """Readings ending at NOW and a meal with its bolus `meal_minutes_ago` (no loop extras)."""
    state = trace(values, doses_u=0.0)
    meal_at = NOW - timedelta(minutes=meal_minutes_ago)
    state.carbs.append(CarbEntry(meal_at, 60, 180))
    state.doses.append(InsulinDose(meal_at, bolus_u, correction=False))
    return state


def test_a_meal_bolus_that_went_nowhere_raises_once_glucose_climbs_past_300() -> None:
    # 60 g at 130 min ago with a 6 U bolus: glucose has climbed from 120 ever since and is
    # still rising at 305–350 for the last 25 min (a bolused meal would have peaked within the
    # hour and be falling by now)
    state = _meal_trace([120] * 10 + line(120, 350, 130), meal_minutes_ago=130)
    assert raised(state)


@pytest.mark.parametrize(
    "case", ["too_soon_after_the_meal", "below_300", "falling_from_the_peak", "no_meal_bolus"]
)
def test_a_high_after_a_meal_is_left_to_the_high_alert(case: str) -> None:
    values = [120] * 10 + line(120, 350, 130)
    meal_minutes_ago, bolus_u = 130, 6.0
    if case == "too_soon_after_the_meal":  # the same climb, but the meal was 60 min ago
        values, meal_minutes_ago = [120] * 24 + line(120, 350, 60), 60
    elif case == "below_300":
        values = [120] * 10 + line(120, 290, 130)
    elif case == "falling_from_the_peak":
        values = [120] * 10 + line(120, 360, 100) + line(360, 320, 30)[1:]
    elif case == "no_meal_bolus":  # no insulin reported: nothing was expected to act
        bolus_u = 0.0
    state = _meal_trace(values, meal_minutes_ago, bolus_u)
    assert not raised(state)


def test_the_post_meal_rule_can_be_switched_off() -> None:
    state = _meal_trace([120] * 10 + line(120, 350, 130), meal_minutes_ago=130)
    off = InfusionSetParams(meal_min_glucose_mg_dl=None)
    assert infusion_set_evidence(state, SETTINGS, NOW, off) is None
    assert infusion_set_evidence(state, SETTINGS, NOW) is not None
