"""Alert rules: from a person's recent observations to the set of conditions that hold now.

Each rule has a raise threshold and a looser resolve threshold (hysteresis): a condition that
is already open stays active until the value is clearly back, so a reading wobbling around a
threshold does not raise, resolve and raise again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.alerts.infusion_set import (
    DEFAULT_INFUSION_SET,
    InfusionSetEvidence,
    InfusionSetParams,
    infusion_set_evidence,
)
from services.alerts.model import (
    AlertKind,
    AlertSettings,
    GlucosePoint,
    InsulinDose,
    PatientState,
)

__all__ = [
    "DEFAULT_INFUSION_SET",
    "Condition",
    "InfusionSetEvidence",
    "InfusionSetParams",
    "evaluate",
    "infusion_set_evidence",
    "insulin_absorbed_u",
    "iob_fraction",
    "projected_glucose",
]

# Glucose older than this is not "current" for threshold rules.
CURRENT_READING_MAX_AGE = timedelta(minutes=12)
FORECAST_MAX_AGE = timedelta(minutes=10)
RAPID_RESOLVE_FRACTION = 2.0 / 3.0

# Infusion-set failure: an open alert resolves below RESOLVE_BELOW (or 20 below the raise level) or
# after falling FALL_RESOLVES from its peak.
ISF_RESOLVE_BELOW_MG_DL = 160.0
ISF_FALL_RESOLVES_MG_DL = 40.0


@dataclass(frozen=True)
class Condition:
    """A rule's verdict: active or not, the value that decided it, a message for people."""

    kind: AlertKind
    active: bool
    value: float | None = None
    message: str = ""


def iob_fraction(minutes: float, duration_min: float = 360.0, peak_min: float = 75.0) -> float:
    """Fraction of a dose still on board after `minutes` (exponential insulin curve)."""
    if minutes <= 0:
        return 1.0
    if minutes >= duration_min:
        return 0.0
    tau = peak_min * (1 - peak_min / duration_min) / (1 - 2 * peak_min / duration_min)
    a = 2 * tau / duration_min
    s = 1 / (1 - a + (1 + a) * math.exp(-duration_min / tau))
    t = minutes
    return 1 - s * (1 - a) * (
        (t * t / (tau * duration_min * (1 - a)) - t / tau - 1) * math.exp(-t / tau) + 1
    )


def insulin_absorbed_u(
    doses: Sequence[InsulinDose], start: datetime, end: datetime, *, corrections_only: bool
) -> float:
    """Units of (correction) insulin that the curve says acted between `start` and `end`."""
    total = 0.0
    for dose in doses:
        if corrections_only and not dose.correction:
            continue
        before = iob_fraction((start - dose.time).total_seconds() / 60)
        after = iob_fraction((end - dose.time).total_seconds() / 60)
        total += dose.insulin_u * (before - after)
    return total


def _slope_mg_dl_per_min(points: Sequence[GlucosePoint]) -> float | None:
    if len(points) < 3:
        return None
    t0 = points[0].time
    xs = [(p.time - t0).total_seconds() / 60 for p in points]
    ys = [p.glucose_mg_dl for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _current_rate(state: PatientState, now: datetime) -> float | None:
    latest = state.latest_glucose()
    if latest is None or now - latest.time > CURRENT_READING_MAX_AGE:
        return None
    if latest.rate_mg_dl_per_min is not None:
        return latest.rate_mg_dl_per_min
    recent = [p for p in state.glucose if latest.time - p.time <= timedelta(minutes=15)]
    return _slope_mg_dl_per_min(recent)


def projected_glucose(
    state: PatientState, settings: AlertSettings, now: datetime
) -> tuple[float, str] | None:
    """Lowest glucose expected within the urgent-low-soon horizon, and where it came from.

    A fresh dosing-engine forecast wins; otherwise the current rate of change is projected
    (momentum), minus what the insulin on board will still do within the horizon.
    """
    horizon = settings.urgent_low_soon_horizon_min
    if state.forecast and state.forecast_time and now - state.forecast_time <= FORECAST_MAX_AGE:
        elapsed = (now - state.forecast_time).total_seconds() / 60
        ahead = [g for m, g in state.forecast if elapsed <= m <= elapsed + horizon]
        if ahead:
            return min(ahead), "forecast"
    latest = state.latest_glucose()
    rate = _current_rate(state, now)
    if latest is None or rate is None:
        return None
    minutes = (now - latest.time).total_seconds() / 60 + horizon
    # Momentum only downwards: a rise never hides a low, a fall is projected in full.
    projection = latest.glucose_mg_dl + min(rate, 0.0) * minutes
    if state.doses:
        end = now + timedelta(minutes=horizon)
        extra_u = insulin_absorbed_u(state.doses, now, end, corrections_only=True)
        projection -= extra_u * settings.isf_mg_dl_per_u * 0.5  # half: momentum holds some
    return projection, "momentum"


def _since_min(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else (now - since).total_seconds() / 60


def evaluate(
    state: PatientState,
    settings: AlertSettings,
    now: datetime,
    open_kinds: Collection[AlertKind] = (),
    infusion_set: InfusionSetParams | None = None,
) -> dict[AlertKind, Condition]:
    """Every rule's verdict at `now`; `open_kinds` selects the resolve thresholds."""
    out: dict[AlertKind, Condition] = {}

    def put(kind: AlertKind, active: bool, value: float | None, message: str) -> None:
        if kind not in settings.disabled:
            out[kind] = Condition(kind, active, value, message)

    latest = state.latest_glucose()
    current = (
        latest if latest is not None and now - latest.time <= CURRENT_READING_MAX_AGE else None
    )
    if current is not None:
        g = current.glucose_mg_dl
        urgent = g < (
            settings.urgent_low_resolve_mg_dl
            if AlertKind.URGENT_LOW in open_kinds
            else settings.urgent_low_mg_dl
        )
        put(AlertKind.URGENT_LOW, urgent, g, f"Urgent low: {g:.0f} mg/dL")
        low = g < (
            settings.low_resolve_mg_dl if AlertKind.LOW in open_kinds else settings.low_mg_dl
        )
        # An urgent low already says it louder; the low alert waits underneath it.
        put(AlertKind.LOW, low and not urgent, g, f"Low: {g:.0f} mg/dL")
        high_at = settings.high_threshold(current.time)
        high = g > (
            high_at - (settings.high_mg_dl - settings.high_resolve_mg_dl)
            if AlertKind.HIGH in open_kinds
            else high_at
        )
        put(AlertKind.HIGH, high, g, f"High: {g:.0f} mg/dL")
        rate = _current_rate(state, now)
        limit = settings.rapid_rate_mg_dl_per_min
        for kind, sign, word in (
            (AlertKind.RAPID_FALL, -1.0, "falling"),
            (AlertKind.RAPID_RISE, 1.0, "rising"),
        ):
            needed = limit * (RAPID_RESOLVE_FRACTION if kind in open_kinds else 1.0)
            active = rate is not None and sign * rate >= needed
            put(kind, active, rate, f"Glucose {word} fast: {rate or 0:+.1f} mg/dL/min")
        projection = projected_glucose(state, settings, now)
        # Once announced, the warning holds until the projection is clearly safe again.
        soon_limit = (
            settings.low_resolve_mg_dl
            if AlertKind.URGENT_LOW_SOON in open_kinds
            else settings.urgent_low_mg_dl
        )
        soon = projection is not None and projection[0] < soon_limit and not urgent
        put(
            AlertKind.URGENT_LOW_SOON,
            soon,
            projection[0] if projection else None,
            f"Urgent low soon: {projection[0]:.0f} mg/dL expected within "
            f"{settings.urgent_low_soon_horizon_min:.0f} min ({projection[1]})"
            if projection
            else "",
        )
        evidence = infusion_set_evidence(state, settings, now, infusion_set)
        if AlertKind.INFUSION_SET_FAILURE in open_kinds and evidence is None:
            # Stays open until glucose comes down clearly or the set is changed.
            raise_at = (infusion_set or DEFAULT_INFUSION_SET).min_glucose_mg_dl
            resolve_below = min(ISF_RESOLVE_BELOW_MG_DL, raise_at - 20.0)
            peak = max((p.glucose_mg_dl for p in state.glucose[-24:]), default=g)
            changed = state.set_changed_at is not None and now - state.set_changed_at < timedelta(
                hours=1
            )
            keep = not changed and g >= resolve_below and peak - g < ISF_FALL_RESOLVES_MG_DL
            put(AlertKind.INFUSION_SET_FAILURE, keep, g, "Infusion set failure suspected")
        else:
            put(
                AlertKind.INFUSION_SET_FAILURE,
                evidence is not None,
                g,
                (
                    f"Infusion set failure suspected: glucose {g:.0f} mg/dL changed "
                    f"{evidence.rise_mg_dl:+.0f} mg/dL in {evidence.window_min:.0f} min while "
                    "carbs and the insulin delivered predicted "
                    f"{evidence.expected_change_mg_dl:+.0f} mg/dL. "
                    "Check the infusion site and tubing for leaks or a dislodged "
                    "cannula, check ketones, and consider a correction by pen or syringe, then "
                    "change the set."
                )
                if evidence
                else "",
            )

    # No data: measured from the newest reading, or from when the person was first seen.
    reference = latest.time if latest is not None else state.first_seen
    silent_min = _since_min(reference, now)
    put(
        AlertKind.NO_CGM_DATA,
        silent_min is not None and silent_min >= settings.no_data_min,
        silent_min,
        f"No CGM data for {silent_min or 0:.0f} min",
    )
    loop_min = _since_min(state.last_loop_time, now)
    put(
        AlertKind.NOT_LOOPING,
        loop_min is not None and loop_min >= settings.not_looping_min,
        loop_min,
        f"Not looping for {loop_min or 0:.0f} min",
    )
    put(
        AlertKind.OCCLUSION,
        state.occlusion_since is not None,
        None,
        "Pump occlusion: insulin is not being delivered",
    )
    if state.reservoir_u is not None:
        r = state.reservoir_u
        very = r <= settings.reservoir_very_low_u
        put(AlertKind.RESERVOIR_VERY_LOW, very, r, f"Reservoir very low: {r:.1f} U")
        put(
            AlertKind.RESERVOIR_LOW,
            r <= settings.reservoir_low_u and not very,
            r,
            f"Reservoir low: {r:.1f} U",
        )
    if state.battery_pct is not None:
        b = state.battery_pct
        very = b <= settings.battery_very_low_pct
        put(AlertKind.BATTERY_VERY_LOW, very, b, f"Pump battery very low: {b:.0f} %")
        put(
            AlertKind.BATTERY_LOW,
            b <= settings.battery_low_pct and not very,
            b,
            f"Pump battery low: {b:.0f} %",
        )
    suspended_min = _since_min(state.suspended_since, now)
    put(
        AlertKind.SUSPENDED_TOO_LONG,
        suspended_min is not None and suspended_min >= settings.suspended_max_min,
        suspended_min,
        f"Pump suspended for {suspended_min or 0:.0f} min",
    )
    put(
        AlertKind.DELIVERY_UNCERTAIN,
        state.delivery_uncertain_since is not None,
        None,
        "Insulin delivery uncertain: automatic dosing paused until pump history confirms it",
    )
    return out
