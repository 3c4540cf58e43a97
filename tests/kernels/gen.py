"""Generated decision inputs (24 h of history) for the differential and property tests."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from kernels._layout import N_PARAMS, Param
from kernels.decision import PackedInput

NOW_S = 1_760_000_000.0


def make_case(seed: int, *, hours: float = 24.0) -> PackedInput:
    """A plausible random history: CGM every 5 min, temps, suspends, boluses, SMBs, meals."""
    rng = np.random.default_rng(seed)
    now = NOW_S + float(rng.integers(0, 86_400))
    n_cgm = int(hours * 12)
    age_last_s = float(
        rng.choice([30.0, 120.0, 240.0, 13 * 60.0, -6 * 60.0], p=[0.5, 0.2, 0.18, 0.06, 0.06])
    )
    cgm_t = now - age_last_s - 300.0 * np.arange(n_cgm - 1, -1, -1, dtype=np.float64)
    cgm_t += rng.normal(0, 8, n_cgm).round()
    cgm_t.sort()
    walk = np.cumsum(rng.normal(0, float(rng.uniform(0.5, 6)), n_cgm))
    level = float(rng.uniform(50, 350))
    cgm_v = np.clip(level + walk - walk[-1], 39, 401).round()
    if rng.random() < 0.05:  # a stuck sensor
        cgm_v[-12:] = cgm_v[-1]
    if rng.random() < 0.1:  # gaps
        keep = rng.random(n_cgm) > 0.3
        keep[-1] = True
        cgm_t, cgm_v = cgm_t[keep], cgm_v[keep]

    t: list[float] = []
    kind: list[float] = []
    amount: list[float] = []
    dur: list[float] = []
    start = now - hours * 3600.0
    tt = start + float(rng.uniform(0, 1800))
    while tt < now:
        r = rng.random()
        if r < 0.7:  # temp basal
            t.append(tt)
            kind.append(1.0)
            amount.append(float(rng.choice([0.0, rng.uniform(0, 2)])))
            dur.append(30.0)
        elif r < 0.77:  # suspend
            t.append(tt)
            kind.append(2.0)
            amount.append(0.0)
            dur.append(float(rng.uniform(5, 60)))
        elif r < 0.95:  # bolus or SMB
            t.append(tt)
            kind.append(0.0)
            amount.append(float(rng.uniform(0.05, 1.0) * rng.choice([1.0, 4.0])))
            dur.append(0.0)
        else:  # extended part of a dual wave
            t.append(tt)
            kind.append(0.0)
            amount.append(float(rng.uniform(0.5, 3)))
            dur.append(float(rng.uniform(30, 480)))
        tt += float(rng.uniform(5, 60)) * 60.0
    n_carb = int(rng.integers(0, 5))
    ct = np.sort(now - rng.uniform(-1800, 10 * 3600, n_carb))
    cg = rng.uniform(0, 120, n_carb).round()
    ca = rng.choice([120.0, 180.0, 240.0, 300.0], n_carb)
    n_seg = int(rng.integers(1, 6))
    bs = np.concatenate(
        [[0.0], np.sort(rng.choice(np.arange(30, 1440, 30), n_seg - 1, replace=False))]
    )
    br = rng.uniform(0.05, 2.5, n_seg).round(2)

    p = np.zeros(N_PARAMS)
    min_bg = float(rng.uniform(80, 130))
    peak = float(rng.choice([75.0, 65.0, 55.0]))
    values = {
        Param.NOW_S: now,
        Param.MODE: float(rng.integers(0, 4)),
        Param.AGE_GROUP: float(rng.integers(0, 5)),
        Param.ISF: float(rng.uniform(15, 150)),
        Param.CR: float(rng.uniform(4, 40)),
        Param.MIN_BG: min_bg,
        Param.MAX_BG: min_bg + float(rng.uniform(0, 40)),
        Param.SUSPEND_THRESHOLD: float(rng.uniform(67, 110)),
        Param.MAX_BASAL: float(rng.uniform(0, 12)),
        Param.MAX_IOB: float(rng.choice([0.0, rng.uniform(0, 25), rng.uniform(0, 70)])),
        Param.MAX_BOLUS: float(rng.choice([rng.uniform(0, 10), rng.uniform(0, 30)])),
        Param.INSULIN_DURATION_MIN: float(rng.choice([300.0, 360.0, 420.0])),
        Param.INSULIN_PEAK_MIN: peak,
        Param.INSULIN_DELAY_MIN: 10.0,
        Param.INSULIN_MODEL: float(rng.random() < 0.2),
        Param.CARB_MODEL: float(rng.integers(0, 2)),
        Param.UTC_OFFSET_MIN: float(rng.choice([0.0, -300.0, 60.0, 330.0])),
        Param.NOISE_LEVEL: float(rng.choice([0, 1, 2, 3, 4], p=[0.5, 0.2, 0.15, 0.1, 0.05])),
        Param.RUNNING_TEMP_RATE: float(rng.choice([math.nan, 0.0, rng.uniform(0, 3)])),
        Param.RUNNING_TEMP_REMAINING_MIN: float(rng.uniform(0, 30)),
        Param.BOLUS_IN_PROGRESS: float(rng.random() < 0.1),
        Param.UNCERTAIN_DELIVERY: float(rng.random() < 0.05),
        Param.LAST_BOLUS_S: float(rng.choice([math.nan, now - rng.uniform(-120, 3600)])),
        Param.LAST_SMB_S: float(rng.choice([math.nan, now - rng.uniform(0, 600)])),
        Param.SENSITIVITY_RATIO: float(rng.choice([math.nan, rng.uniform(0.5, 1.5)])),
        Param.BASAL_INCREMENT: float(rng.choice([0.05, 0.1, 0.025])),
        Param.BOLUS_INCREMENT: float(rng.choice([0.05, 0.1])),
        Param.ENABLE_UAM: float(rng.integers(0, 2)),
    }
    for slot, v in values.items():
        p[slot] = v
    if p[Param.INSULIN_MODEL] == 1.0:
        p[Param.INSULIN_PEAK_MIN] = 0.4 * p[Param.INSULIN_DURATION_MIN]
    f = np.asarray
    return PackedInput(
        p, f(cgm_t), f(cgm_v), f(t, dtype=np.float64), f(kind, dtype=np.float64),
        f(amount, dtype=np.float64), f(dur, dtype=np.float64), f(ct), f(cg), f(ca), f(bs), f(br),
    )  # fmt: skip


def with_params(case: PackedInput, **slots: float) -> PackedInput:
    p = case.params.copy()
    for name, v in slots.items():
        p[Param[name]] = v
    return replace(case, params=p)
