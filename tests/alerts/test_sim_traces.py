"""Alert rules driven by simulated people (sim/): lows are announced before they happen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.alerts.model import AlertKind, AlertSettings, GlucosePoint, PatientState
from services.alerts.rules import evaluate
from services.runtime.clock import FixedClock
from sim.person import make_cohort
from sim.runner import run_cohort
from sim.scenarios import SCENARIOS, STEP_MIN
from tests.alerts.helpers import Harness, RecordingEvents, make_engine

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _falls_below_55(cgm: list[int], true_mg_dl: list[float]) -> list[int]:
    """Steps where CGM first reads < 55 after at least an hour at or above 80, in a real fall
    (blood glucose below 70 and down ≥ 10 mg/dL in 30 min: not a compression artefact)."""
    crossings = []
    above_since: int | None = None
    for k, value in enumerate(cgm):
        if value < 0:
            continue
        if value >= 80:
            above_since = k if above_since is None else above_since
        elif value < 55:
            falling = k >= 6 and true_mg_dl[k - 6] - true_mg_dl[k] >= 10
            if above_since is not None and k - above_since >= 12 and true_mg_dl[k] < 70 and falling:
                crossings.append(k)
            above_since = None
    return crossings


@pytest.mark.slow
def test_urgent_low_soon_comes_before_every_fall_below_55() -> None:
    people = make_cohort()
    warned: list[float] = []
    missed: list[tuple[str, int]] = []
    runs = [
        run_cohort(people, SCENARIOS[name], seed=seed)
        for name in ("exercise", "carb_error")
        for seed in (3, 4, 5)
    ]
    for result, (i, person) in ((r, p) for r in runs for p in enumerate(people)):
        cgm = [int(v) for v in result.cgm_mg_dl[i].tolist()]
        crossings = set(_falls_below_55(cgm, result.glucose_mg_dl[i].tolist()))
        if not crossings:
            continue
        state = PatientState(person.person_id, first_seen=T0)
        settings = AlertSettings()
        open_kinds: set[AlertKind] = set()
        first_soon: int | None = None
        for k, value in enumerate(cgm):
            now = T0 + timedelta(minutes=k * STEP_MIN)
            if value >= 0:
                state.add_glucose(GlucosePoint(now, float(max(40, min(400, value)))))
            state.prune(now)
            verdicts = evaluate(state, settings, now, open_kinds)
            if k in crossings:
                if first_soon is not None:
                    warned.append((k - first_soon) * STEP_MIN)
                else:
                    missed.append((person.person_id, k))
            soon = verdicts.get(AlertKind.URGENT_LOW_SOON)
            low = verdicts.get(AlertKind.URGENT_LOW)
            for kind, verdict in ((AlertKind.URGENT_LOW_SOON, soon), (AlertKind.URGENT_LOW, low)):
                if verdict is not None and verdict.active:
                    open_kinds.add(kind)
                else:
                    open_kinds.discard(kind)
            if soon is not None and soon.active and first_soon is None:
                first_soon = k
            if value >= 80:
                first_soon = None
    total = len(warned) + len(missed)
    assert total >= 5, "the scenario should produce falls below 55 mg/dL"
    print(f"falls below 55: {total}, warned before: {len(warned)}, lead min: {sorted(warned)}")
    assert not missed, f"no urgent-low-soon before {missed}"
    assert min(warned) >= 5  # at least one reading's notice


def test_falling_person_gets_urgent_low_soon_through_the_service(tmp_path: Path) -> None:
    """One simulated fall replayed through the service and its storage: raised, then resolved
    into the urgent low when it arrives (one alert each, no flapping)."""
    people = make_cohort()
    result = run_cohort(people, SCENARIOS["exercise"], seed=3, days=3)
    for i in range(len(people)):
        cgm = [int(v) for v in result.cgm_mg_dl[i].tolist()]
        crossings = _falls_below_55(cgm, result.glucose_mg_dl[i].tolist())
        if crossings:
            break
    else:
        pytest.skip("no fall below 55 in this run")
    k_cross = crossings[0]
    _engine, sessions = make_engine(tmp_path)
    clock = FixedClock(T0)
    harness = Harness(sessions, clock, RecordingEvents())
    soon_raised_at: int | None = None
    for k in range(max(0, k_cross - 36), k_cross + 1):
        clock.current = T0 + timedelta(minutes=k * STEP_MIN)
        if cgm[k] < 0:
            continue
        with harness.service() as (service, _):
            work = service.on_reading("p", clock.current, float(max(40, cgm[k])), None)
        if any(a.kind is AlertKind.URGENT_LOW_SOON for a in work.raised):
            soon_raised_at = soon_raised_at if soon_raised_at is not None else k
    assert soon_raised_at is not None
    assert soon_raised_at < k_cross
    raised = [c for c in harness.events.changes if c[3] == "raised"]
    assert [c[1] for c in raised].count("urgent_low_soon") == 1
    assert [c[1] for c in raised].count("urgent_low") == 1
