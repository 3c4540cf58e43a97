"""The dosing-engine sim adapter: the forecast margin every increase needs for insulin on board."""

from __future__ import annotations

from kernels._layout import Out, Param
from sim.cgm import CgmReading
from sim.controller import CarbAnnouncement, ControllerInput
from sim.controllers.dosing_engine import DosingEngineController, LoopTuning
from sim.person import VirtualPerson
from sim.pump import Pump
from sim.runner import apply_output


def _run(person: VirtualPerson, tuning: LoopTuning) -> tuple[float, list[tuple[float, float]]]:
    """A meal bolused at 130 mg/dL, then glucose rising faster than the carbs explain; returns
    the insulin the loop added (micro-boluses and temp above schedule) and, for each increase,
    (forecast minimum, threshold + margin)."""
    th = person.therapy
    ctl = DosingEngineController(th, tuning)
    pump = Pump(th)
    added_u = 0.0
    increases: list[tuple[float, float]] = []
    seen = 0
    for step in range(48):
        t = step * 5
        glucose = 130 + max(0, t - 20) * 1.6
        carbs = (CarbAnnouncement(t, 90.0),) if t == 60 else ()
        events = tuple(pump.history[seen:])
        seen = len(pump.history)
        out = ctl.step(
            ControllerInput(t, CgmReading(t, int(glucose)), pump.status(t), events, carbs)
        )
        o = ctl._out
        if out is not None:
            smb = out.bolus.amount_u if out.bolus is not None and not carbs else 0.0
            sched = float(o[Out.SCHEDULED_BASAL])
            extra = 0.0
            if out.temp_basal is not None and out.temp_basal.rate_u_per_h > sched:
                extra = (out.temp_basal.rate_u_per_h - sched) * 5 / 60
            if smb > 0 or extra > 0:
                isf = th.isf_mg_dl_per_u / float(o[Out.SENSITIVITY_RATIO])
                need = float(o[Out.THRESHOLD]) + (
                    tuning.increase_margin_iob_fraction * max(0.0, float(o[Out.IOB])) * isf
                )
                increases.append((float(o[Out.MIN_GUARD_BG]), need))
                added_u += smb + extra
            apply_output(pump, t, out)
        pump.advance(t)
    return added_u, increases


def test_every_increase_keeps_the_margin_and_the_margin_gives_less(cohort):
    person = next(p for p in cohort if p.therapy.age_group == "adolescent")
    with_margin, increases = _run(person, LoopTuning())
    without, _ = _run(person, LoopTuning(increase_margin_iob_fraction=0.0))
    assert LoopTuning().increase_margin_iob_fraction > 0
    assert all(guard >= need for guard, need in increases)
    assert without > 0
    assert with_margin < without


def _meal_run(
    person: VirtualPerson, tuning: LoopTuning, *, offline: range = range(0)
) -> tuple[float, list[tuple[int, float, int]], list[int]]:
    """A 60 g meal at minute 120 on a flat 160 mg/dL; returns the meal bolus, the temps the
    controller set from the meal on (minute, rate, duration) and the minutes it cancelled one.
    The hub is offline (no controller step) in the minutes of `offline`."""
    th = person.therapy
    ctl = DosingEngineController(th, tuning)
    pump = Pump(th)
    meal_u = 0.0
    temps: list[tuple[int, float, int]] = []
    cancels: list[int] = []
    seen = 0
    for step in range(60):
        t = step * 5
        if t not in offline:
            carbs = (CarbAnnouncement(t, 60.0),) if t == 120 else ()
            events = tuple(pump.history[seen:])
            seen = len(pump.history)
            out = ctl.step(ControllerInput(t, CgmReading(t, 160), pump.status(t), events, carbs))
            if out is not None:
                if carbs and out.bolus is not None:
                    meal_u = out.bolus.amount_u
                if t >= 120 and out.temp_basal is not None:
                    temps.append((t, out.temp_basal.rate_u_per_h, out.temp_basal.duration_min))
                if t >= 120 and out.cancel_temp_basal:
                    cancels.append(t)
                apply_output(pump, t, out)
        pump.advance(t)
    return meal_u, temps, cancels


def test_super_bolus_takes_the_basal_back_on_the_pump(cohort):
    person = next(p for p in cohort if p.therapy.age_group == "adult")
    plain_u, _, _ = _meal_run(person, LoopTuning())
    sb = LoopTuning(meal_bolus_basal_min=60.0, super_bolus_zero_temp=True)
    super_u, temps, cancels = _meal_run(person, sb)
    basal_u = person.therapy.basal_at(120) * 60.0 / 60.0
    assert abs(super_u - min(plain_u + basal_u, person.therapy.max_bolus_u)) < 0.05 + 1e-9
    # the meal step programs a zero temp for the super bolus's 60 min on the pump itself
    assert temps[0] == (120, 0.0, 60)
    # within those 60 min the loop neither raises the temp nor cancels it
    assert not any(120 < t < 180 and rate > 0 for t, rate, _ in temps)
    assert not any(120 < t < 180 for t in cancels)


def test_no_super_bolus_unless_the_loop_was_running(cohort):
    person = next(p for p in cohort if p.therapy.age_group == "adult")
    plain_u, _, _ = _meal_run(person, LoopTuning())
    sb = LoopTuning(
        meal_bolus_basal_min=60.0, super_bolus_zero_temp=True, super_bolus_loop_running_min=30.0
    )
    running_u, _, _ = _meal_run(person, sb)
    after_gap_u, temps, _ = _meal_run(person, sb, offline=range(95, 115))
    assert running_u > plain_u
    assert abs(after_gap_u - plain_u) < 1e-9
    assert all(duration <= 30 for _, _, duration in temps)


def test_the_carb_ratio_schedule_in_effect_at_the_meal_sets_its_bolus(cohort):
    person = next(p for p in cohort if p.therapy.age_group == "adult")
    plain_u, _, _ = _meal_run(person, LoopTuning())
    # a stronger ratio (× 0.8) from 01:00: the meal at 02:00 needs more insulin
    stronger_u, _, _ = _meal_run(person, LoopTuning(carb_ratio_schedule=((0, 1.0), (60, 0.8))))
    # the same segment starting after the meal changes nothing at the meal
    later_u, _, _ = _meal_run(person, LoopTuning(carb_ratio_schedule=((0, 1.0), (180, 0.8))))
    assert stronger_u > plain_u + 0.2
    assert later_u == plain_u


def test_the_eating_soon_windows_lower_the_target_before_usual_meals_only(cohort):
    person = next(p for p in cohort if p.therapy.age_group == "adult")
    ctl = DosingEngineController(person.therapy, LoopTuning())
    pump = Pump(person.therapy)

    def target_range_at(t_min: int) -> tuple[float, float]:
        inp = ControllerInput(t_min, CgmReading(t_min, 120), pump.status(t_min), (), ())
        params = ctl._packed(inp, 0.0, False).params
        return float(params[Param.MIN_BG]), float(params[Param.MAX_BG])

    usual = (ctl.settings.min_bg_mg_dl, ctl.settings.max_bg_mg_dl)
    assert target_range_at(3 * 60) == usual
    assert target_range_at(14 * 60) == usual
    for before_meal_min in (6 * 60 + 45, 11 * 60 + 30, 18 * 60):
        low, high = target_range_at(before_meal_min)
        # 30 mg/dL lower, never below the gateway's lowest correction target
        assert low == max(80.0, usual[0] - 30.0)
        assert high == max(low, usual[1] - 30.0)
        assert low < usual[0]
