"""Simulation speed: the whole virtual cohort for 14 days with the baseline controller.

Run as `python -m bench.sim` (or `make bench-sim`). Prints progress and the figures, and ends
with `RESULT sim patient_days_per_s=<n>`.
"""

from __future__ import annotations

import os
import time

from sim.person import make_cohort
from sim.runner import run_cohort
from sim.scenarios import SCENARIOS

DAYS = int(os.environ.get("SIM_DAYS", "14"))
REPEATS = int(os.environ.get("SIM_REPEATS", "3"))


def main() -> None:
    t0 = time.perf_counter()
    people = make_cohort()
    print(f"cohort: {len(people)} people built in {time.perf_counter() - t0:.2f} s")
    scenario = SCENARIOS["standard"]
    # warm-up on one day (imports, first-call costs), then the measured runs
    run_cohort(people, scenario, "baseline", seed=0, days=1)
    best = float("inf")
    result = None
    for rep in range(REPEATS):
        t = time.perf_counter()
        result = run_cohort(people, scenario, "baseline", seed=rep, days=DAYS)
        elapsed = time.perf_counter() - t
        best = min(best, elapsed)
        print(
            f"run {rep + 1}/{REPEATS}: {len(people)} people × {DAYS} days "
            f"({result.glucose_mg_dl.shape[1]} five-minute steps each) in {elapsed:.2f} s"
        )
    assert result is not None
    patient_days = result.patient_days
    rate = patient_days / best
    per_step_us = best / (len(people) * result.glucose_mg_dl.shape[1]) * 1e6
    o = result.cohort_outcomes()
    print(
        f"best: {best:.2f} s for {patient_days:.0f} patient-days; "
        f"{per_step_us:.1f} µs per person-step"
    )
    print(
        f"sanity: TIR {o.tir_pct:.1f} %, TBR<70 {o.tbr70_pct:.2f} %, mean {o.mean_mg_dl:.0f} mg/dL"
    )
    print(f"RESULT sim patient_days_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
