"""Dosing-kernel benchmark: full decisions (24 h of history, 6 h forecast) on one core.

Measured path: `kernels.decision.decide_packed` on a pre-packed `PackedInput` (numpy arrays,
as a service keeps them per person) into a preallocated output — one Python call per decision,
no pydantic, input validation included. The pydantic `decide()` path and the plain-Python
reference are timed on the same inputs for comparison.

The process is pinned to one core. The machine may be shared, so the RESULT figures use this
thread's CPU time (what one core can do); wall-clock figures are printed beside them.

    python -m bench.kernels [--people 200] [--seconds 3]

Ends with `RESULT kernels decisions_per_s=<n> p99_us=<x> speedup_vs_reference=<y>`.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from kernels._layout import N_OUT, N_PARAMS, Mode
from kernels.decision import (
    BasalSegment,
    CarbEntry,
    DecisionInput,
    Dose,
    DoseKind,
    PackedInput,
    TherapySettings,
    decide,
    decide_packed,
    pack,
)
from kernels.reference.decide import decide_packed_reference

DAY_S = 86_400.0


def person(seed: int, now_s: float) -> DecisionInput:
    """One person's last 24 h: CGM every 5 min, a temp basal every 5–30 min, meals with
    boluses, micro-boluses, an extended bolus; closed loop with micro-boluses."""
    rng = np.random.default_rng(seed)
    n = 288
    cgm_t = now_s - 60.0 - 300.0 * np.arange(n - 1, -1, -1)
    day = np.sin(np.linspace(0, 6 * math.pi, n)) * 50
    cgm = np.clip(140 + day + np.cumsum(rng.normal(0, 2, n)), 40, 400).round()
    doses: list[Dose] = []
    t = now_s - DAY_S
    while t < now_s - 300:
        doses.append(
            Dose(
                t_s=t, kind=DoseKind.TEMP_BASAL, amount=float(rng.uniform(0, 2.5)), duration_min=30
            )
        )
        if rng.random() < 0.15:
            doses.append(
                Dose(t_s=t + 60, kind=DoseKind.BOLUS, amount=float(rng.uniform(0.05, 0.5)))
            )
        t += float(rng.choice([300.0, 300.0, 600.0]))  # the loop re-issues often
    carbs = []
    for hours_ago in (22.0, 17.0, 12.0, 6.0, 1.5):
        ct = now_s - hours_ago * 3600
        carbs.append(CarbEntry(t_s=ct, carbs_g=float(rng.uniform(20, 90)), absorption_min=180))
        doses.append(Dose(t_s=ct, kind=DoseKind.BOLUS, amount=float(rng.uniform(2, 8))))
    doses.append(Dose(t_s=now_s - 2 * 3600, kind=DoseKind.BOLUS, amount=2.0, duration_min=180))
    settings = TherapySettings(
        isf_mg_dl_per_u=float(rng.uniform(30, 90)),
        carb_ratio_g_per_u=float(rng.uniform(6, 15)),
        max_basal_u_per_h=4.0,
        max_iob_u=8.0,
        basal_schedule=(
            BasalSegment(start_min=0, rate_u_per_h=0.8),
            BasalSegment(start_min=360, rate_u_per_h=1.1),
            BasalSegment(start_min=1200, rate_u_per_h=0.9),
        ),
    )
    return DecisionInput(
        now_s=now_s,
        mode=Mode.CLOSED_LOOP_SMB,
        cgm_t_s=tuple(cgm_t.tolist()),
        cgm_mg_dl=tuple(cgm.tolist()),
        doses=tuple(doses),
        carbs=tuple(carbs),
        settings=settings,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # one core

    now = 1_760_000_000.0
    print(f"building {args.people} people with 24 h of history …", flush=True)
    inputs = [person(i, now + 37.0 * i) for i in range(args.people)]
    packed: list[PackedInput] = [pack(x) for x in inputs]
    sizes = [(p.cgm_t_s.size, p.dose_t_s.size, p.carb_t_s.size) for p in packed]
    n_cgm, n_dose, n_carb = np.mean(sizes, axis=0)
    print(
        f"per decision: {n_cgm:.0f} CGM readings, {n_dose:.0f} doses, {n_carb:.0f} carb entries"
        f" (mean); params {N_PARAMS}, out {N_OUT} (6 h forecast, 5 lines × 73 points)",
        flush=True,
    )
    out = np.empty(N_OUT)
    for p in packed:  # warm-up
        decide_packed(p, out)

    print(f"throughput: packed path for {args.seconds:.0f} s …", flush=True)
    count = 0
    n = len(packed)
    start = time.perf_counter()
    cpu_start = time.thread_time()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for p in packed:
            decide_packed(p, out)
        count += n
    elapsed = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    per_s = count / cpu
    print(
        f"  {count} decisions: {count / elapsed:,.0f}/s of wall-clock time, "
        f"{per_s:,.0f}/s of this thread's CPU time (load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )

    print("latency: timing 50,000 single decisions …", flush=True)
    wall = np.empty(50_000)
    own = np.empty(50_000)
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(wall.size):
        p = packed[i % n]
        c_ns = cpu_clock()
        t_ns = wall_clock()
        decide_packed(p, out)
        wall[i] = wall_clock() - t_ns
        own[i] = cpu_clock() - c_ns  # includes one wall-clock read pair: slightly pessimistic
    w50, w99 = np.percentile(wall / 1000.0, [50, 99])
    c50, c99 = np.percentile(own / 1000.0, [50, 99])
    print(f"  wall-clock p50 {w50:.1f} µs  p99 {w99:.1f} µs  (includes time other processes ran)")
    print(f"  thread CPU p50 {c50:.1f} µs  p99 {c99:.1f} µs", flush=True)
    p99 = c99

    print("pydantic decide() (validation + packing + decoding), 2,000 calls …", flush=True)
    t0 = time.perf_counter()
    for i in range(2000):
        decide(inputs[i % n])
    api_us = (time.perf_counter() - t0) / 2000 * 1e6
    print(f"  {api_us:.0f} µs per decision through the typed API", flush=True)

    print("reference (plain Python), 300 decisions …", flush=True)
    ref_out = np.empty(N_OUT)
    t0 = time.perf_counter()
    for i in range(300):
        decide_packed_reference(*packed[i % n].arrays(), ref_out)
    ref_us = (time.perf_counter() - t0) / 300 * 1e6
    fast_us = 1e6 / per_s
    speedup = ref_us / fast_us
    worst = 0.0
    for p in packed[:50]:
        decide_packed(p, out)
        decide_packed_reference(*p.arrays(), ref_out)
        worst = max(worst, float(np.max(np.abs(out - ref_out))))
    print(f"  {ref_us:,.0f} µs per decision; compiled {fast_us:.1f} µs; max |Δ| {worst:.1e}")
    print(
        f"RESULT kernels decisions_per_s={per_s:.0f} p99_us={p99:.1f} "
        f"speedup_vs_reference={speedup:.0f}"
    )


if __name__ == "__main__":
    main()
