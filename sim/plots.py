"""PNG plots of simulation runs (matplotlib, Agg backend): one person's day and the cohort AGP."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from sim.runner import RunResult
from sim.scenarios import STEP_MIN, STEPS_PER_DAY

__all__ = ["plot_agp", "plot_day"]


def plot_day(result: RunResult, person_index: int, day: int, path: Path) -> Path:
    """Glucose (true and CGM) with the 70–180 band, insulin (basal rate, boluses) and carbs."""
    person = result.people[person_index]
    sl = slice(day * STEPS_PER_DAY, (day + 1) * STEPS_PER_DAY)
    hours = np.arange(STEPS_PER_DAY) * STEP_MIN / 60.0
    glucose = result.glucose_mg_dl[person_index, sl]
    cgm = result.cgm_mg_dl[person_index, sl].astype(float)
    cgm[cgm < 0] = np.nan
    # pulses of 0.05 U make the per-step rate flicker: show the 30-minute mean
    basal_all = result.basal_u[person_index]
    basal_rate = (np.convolve(basal_all, np.ones(6) / 6, mode="same") * 60.0 / STEP_MIN)[sl]
    bolus = result.bolus_u[person_index, sl]
    carbs = result.carbs_g[person_index, sl]
    rescue = result.rescue_carbs_g[person_index, sl]

    fig, (ax_g, ax_i, ax_c) = plt.subplots(
        3, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3, 1]}
    )
    ax_g.axhspan(70, 180, color="tab:green", alpha=0.12, label="target 70–180")
    ax_g.axhline(person.therapy.target_mg_dl, color="tab:green", lw=0.8, ls="--")
    ax_g.plot(hours, glucose, color="black", lw=1.6, label="blood glucose (true)")
    ax_g.plot(hours, cgm, ".", color="tab:blue", ms=3, label="CGM")
    ax_g.set_ylabel("glucose (mg/dL)")
    ax_g.set_ylim(40, max(300, float(np.nanmax(glucose)) + 20))
    ax_g.legend(loc="upper right", fontsize=8)
    ax_g.set_title(
        f"{person.person_id} ({person.age_years} y, {person.weight_kg:g} kg) — "
        f"{result.scenario.name}, day {day + 1}, controller {result.controller}"
    )
    ax_i.step(hours, basal_rate, where="post", color="tab:purple", label="basal (U/h, 30-min mean)")
    ax_i2 = ax_i.twinx()
    nz = bolus > 0
    ax_i2.bar(hours[nz], bolus[nz], width=0.15, color="tab:red", label="bolus (U)")
    ax_i.set_ylabel("basal U/h")
    ax_i2.set_ylabel("bolus U")
    ax_i.legend(loc="upper left", fontsize=8)
    ax_i2.legend(loc="upper right", fontsize=8)
    ax_c.bar(hours[carbs > 0], carbs[carbs > 0], width=0.3, color="tab:orange", label="meal carbs")
    ax_c.bar(
        hours[rescue > 0], rescue[rescue > 0], width=0.3, color="tab:pink", label="rescue carbs"
    )
    ax_c.set_ylabel("carbs g")
    ax_c.set_xlabel("time of day (h)")
    ax_c.set_xticks(range(0, 25, 3))
    ax_c.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_agp(result: RunResult, path: Path) -> Path:
    """Ambulatory glucose profile of the cohort: 5/25/50/75/95th percentiles by time of day."""
    g = result.glucose_mg_dl
    days = g.shape[1] // STEPS_PER_DAY
    cube = g[:, : days * STEPS_PER_DAY].reshape(len(result.people), days, STEPS_PER_DAY)
    by_time = cube.transpose(2, 0, 1).reshape(STEPS_PER_DAY, -1)
    p5, p25, p50, p75, p95 = np.percentile(by_time, [5, 25, 50, 75, 95], axis=1)
    hours = np.arange(STEPS_PER_DAY) * STEP_MIN / 60.0
    o = result.cohort_outcomes()
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.axhspan(70, 180, color="tab:green", alpha=0.10)
    ax.fill_between(hours, p5, p95, color="tab:blue", alpha=0.15, label="5–95 %")
    ax.fill_between(hours, p25, p75, color="tab:blue", alpha=0.35, label="25–75 %")
    ax.plot(hours, p50, color="tab:blue", lw=2, label="median")
    for level in (54, 70, 180, 250):
        ax.axhline(level, color="grey", lw=0.6, ls=":")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xlabel("time of day (h)")
    ax.set_ylabel("blood glucose (mg/dL)")
    ax.set_title(
        f"Cohort AGP — {len(result.people)} people × {days} days, {result.scenario.name}, "
        f"controller {result.controller}: TIR {o.tir_pct:.0f} %, TBR<70 {o.tbr70_pct:.1f} %, "
        f"GMI {o.gmi_pct:.1f} %"
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    """`make sim-plots`: a day of one adult and the cohort AGP (standard scenario, baseline)."""
    from sim.person import make_cohort
    from sim.runner import run_cohort
    from sim.scenarios import SCENARIOS

    people = make_cohort()
    result = run_cohort(people, SCENARIOS["standard"], "baseline", seed=7)
    person = next(i for i, p in enumerate(people) if p.age_group == "adult")
    out = Path("docs/img")
    for path in (
        plot_day(result, person, 2, out / "sim_day.png"),
        plot_agp(result, out / "sim_agp.png"),
    ):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
