"""The dosing-engine sim adapter: the forecast margin every increase needs for insulin on board."""

from __future__ import annotations

from kernels._layout import Out
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
