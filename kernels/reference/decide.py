"""Reference twin of kernels/_decide.pyx: the full decision in plain Python on packed arrays."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from kernels._layout import (
    HARD_MAX_BASAL_U_PER_H,
    HARD_MAX_BOLUS_U,
    HARD_MAX_IOB_U,
    N_FORECAST,
    N_OUT,
    Out,
    Param,
    Reason,
)
from kernels.reference.core import (
    HIST_STEPS,
    MAX_CARBS,
    MAX_DEVS,
    N_FUTURE,
    STEP_MIN,
    carb_fraction,
    clamp,
    convolve,
    curve_table,
    deposit_doses,
    minute_of_day,
    scheduled_basal,
)

__all__ = ["decide_packed_reference"]

F64 = npt.NDArray[np.float64]
CARB_DELAY_MIN = 10.0
N_FC = N_FORECAST
O_LINES = int(Out.LINE_MAIN)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    lo = max(a0, b0)
    hi = min(a1, b1)
    return hi - lo if hi > lo else 0.0


def _grid_at(e: list[float], origin: int, rel_min: float) -> float:
    n = len(e)
    p = rel_min / STEP_MIN + origin
    i = math.floor(p)
    if i < 0:
        return e[0]
    if i >= n - 1:
        return e[n - 1]
    return e[i] + (e[i + 1] - e[i]) * (p - i)


def _floor_to(x: float, inc: float) -> float:
    if inc <= 0.0:
        return x
    return math.floor(x / inc + 1e-9) * inc


def decide_packed_reference(  # noqa: PLR0917 — mirrors the compiled kernel's positional signature
    params: F64,
    cgm_t_s: F64,
    cgm_mg_dl: F64,
    dose_t_s: F64,
    dose_kind: F64,
    dose_amount: F64,
    dose_duration_min: F64,
    carb_t_s: F64,
    carb_g: F64,
    carb_absorption_min: F64,
    basal_start_min: F64,
    basal_rate_u_per_h: F64,
    out: F64,
) -> int:
    """Same contract as kernels._decide.decide_packed, in plain Python."""
    p = params.tolist()
    cgm_t = cgm_t_s.tolist()
    cgm_v = cgm_mg_dl.tolist()
    sched_start = basal_start_min.tolist()
    sched_rate = basal_rate_u_per_h.tolist()
    o = [0.0] * N_OUT
    now = p[Param.NOW_S]
    mode = int(p[Param.MODE])
    age = int(p[Param.AGE_GROUP])
    isf, cr = p[Param.ISF], p[Param.CR]
    min_bg, max_bg = p[Param.MIN_BG], p[Param.MAX_BG]
    td, tp, delay = (
        p[Param.INSULIN_DURATION_MIN],
        p[Param.INSULIN_PEAK_MIN],
        p[Param.INSULIN_DELAY_MIN],
    )
    imodel, cmodel = int(p[Param.INSULIN_MODEL]), int(p[Param.CARB_MODEL])
    utc = p[Param.UTC_OFFSET_MIN]
    run_rate, run_rem = p[Param.RUNNING_TEMP_RATE], p[Param.RUNNING_TEMP_REMAINING_MIN]
    uam = p[Param.ENABLE_UAM] != 0.0
    reasons = 0
    stale = future = no_increase = carbs_active = False
    action = 0
    duration = 0.0
    o[Out.N_FORECAST] = N_FC

    max_basal_eff = p[Param.MAX_BASAL]
    if max_basal_eff > HARD_MAX_BASAL_U_PER_H[age]:
        max_basal_eff = HARD_MAX_BASAL_U_PER_H[age]
        reasons |= Reason.HARD_LIMIT
    max_iob_eff = p[Param.MAX_IOB]
    if max_iob_eff > HARD_MAX_IOB_U[age]:
        max_iob_eff = HARD_MAX_IOB_U[age]
        reasons |= Reason.HARD_LIMIT
    max_bolus_eff = min(p[Param.MAX_BOLUS], 30.0)
    if max_bolus_eff > HARD_MAX_BOLUS_U[age]:
        max_bolus_eff = HARD_MAX_BOLUS_U[age]
        reasons |= Reason.HARD_LIMIT
    sched_now = scheduled_basal(minute_of_day(0.0, now, utc), sched_start, sched_rate)
    max_sched = max(0.0, *sched_rate)
    max_safe = max_basal_eff
    max_safe = min(max_safe, 3.0 * max_sched)
    max_safe = min(max_safe, 4.0 * sched_now)
    running = (not math.isnan(run_rate)) and run_rem > 0.0
    cur_rate = run_rate if running else sched_now
    threshold = min_bg - 0.5 * (min_bg - 40.0)
    threshold = max(threshold, p[Param.SUSPEND_THRESHOLD])
    target = 0.5 * (min_bg + max_bg)
    o[Out.SCHEDULED_BASAL] = sched_now
    o[Out.MAX_SAFE_BASAL] = max_safe
    o[Out.THRESHOLD] = threshold

    lag, c, act = curve_table(imodel, td, tp, delay)
    origin = HIST_STEPS + lag + 1
    n_bins = origin + N_FUTURE + 1
    bins = [0.0] * n_bins
    zbins = [0.0] * n_bins
    deposit_doses(
        bins, origin, now, utc, float(origin * STEP_MIN),
        dose_t_s.tolist(), dose_kind.tolist(), dose_amount.tolist(), dose_duration_min.tolist(),
        sched_start, sched_rate,
    )  # fmt: skip
    iob = convolve(bins, c, lag)
    eff = [0.0] * n_bins
    acc = 0.0
    for i in range(n_bins):
        acc += bins[i]
        eff[i] = acc - iob[i]
    act_now = 0.0
    for lg in range(lag + 1):
        if origin - lg >= 0:
            act_now += bins[origin - lg] * act[lg]
    o[Out.IOB] = iob[origin]
    o[Out.ACTIVITY] = act_now
    for k in range(N_FUTURE):
        x = (
            -scheduled_basal(minute_of_day(k * STEP_MIN + 2.5, now, utc), sched_start, sched_rate)
            * STEP_MIN
            / 60.0
        )
        zbins[origin + k] += 0.5 * x
        zbins[origin + k + 1] += 0.5 * x
    ziob = convolve(zbins, c, lag)

    n_cgm = len(cgm_t)
    if n_cgm == 0:
        reasons |= Reason.NO_CGM
        o[Out.REASONS] = float(reasons)
        o[Out.RATE] = cur_rate
        o[Out.DURATION] = run_rem if running else 0.0
        o[Out.SENSITIVITY_RATIO] = 1.0
        out[:] = o
        return 0

    bg = cgm_v[n_cgm - 1]
    age_min = -(cgm_t[n_cgm - 1] - now) / 60.0
    o[Out.BG] = bg
    if age_min > 12.0:
        stale = True
        reasons |= Reason.STALE_CGM
    if age_min < -5.0:
        future = True
        reasons |= Reason.FUTURE_CGM
    if p[Param.NOISE_LEVEL] >= 3.0:
        reasons |= Reason.NOISY_CGM
        no_increase = True
    flat = False
    first = n_cgm - 1
    while first > 0 and cgm_t[first - 1] >= cgm_t[n_cgm - 1] - 47.5 * 60.0:
        first -= 1
    if cgm_t[n_cgm - 1] - cgm_t[first] >= 42.5 * 60.0:
        flat = all(cgm_v[i] == bg for i in range(first, n_cgm))
    if flat:
        reasons |= Reason.FLAT_CGM
        no_increase = True
    if stale or future:
        no_increase = True

    c0 = 0
    while c0 < n_cgm and cgm_t[c0] - now < -HIST_STEPS * STEP_MIN * 60.0:
        c0 += 1
    if n_cgm - 1 - c0 > MAX_DEVS:  # very dense CGM: keep the most recent pairs
        c0 = n_cgm - 1 - MAX_DEVS
    dbg: list[float] = []
    de: list[float] = []
    ddt: list[float] = []
    for i in range(c0 + 1, n_cgm):
        if len(dbg) >= MAX_DEVS:
            break
        x = (cgm_t[i - 1] - now) / 60.0
        y = (cgm_t[i] - now) / 60.0
        if y > 0.0:
            break
        dbg.append(cgm_v[i] - cgm_v[i - 1])
        de.append(_grid_at(eff, origin, y) - _grid_at(eff, origin, x))
        ddt.append(y - x)
    n_pairs = len(dbg)

    n_carbs = len(carb_t_s)
    nc = min(n_carbs, MAX_CARBS)
    ct, cgs, ca = carb_t_s.tolist(), carb_g.tolist(), carb_absorption_min.tolist()
    crel = [(ct[n_carbs - nc + j] - now) / 60.0 for j in range(nc)]
    cg = [cgs[n_carbs - nc + j] for j in range(nc)]
    cabs = [ca[n_carbs - nc + j] for j in range(nc)]
    cmin = [cg[j] / (1.5 * cabs[j]) for j in range(nc)]
    for j in range(nc):
        if crel[j] <= 0.0 and crel[j] + 1.5 * cabs[j] > 0.0:
            carbs_active = True

    # oref0 autosens: a deviation while net IOB exceeds 2 × the scheduled basal (U against U/h),
    # and the positive ones that follow it, belong to an unannounced meal, not to sensitivity
    sens_devs: list[float] = []
    in_uam = False
    for i in range(n_pairs):
        if ddt[i] <= 0.0 or ddt[i] > 15.0:
            continue
        x = (cgm_t[c0 + i] - now) / 60.0
        if all(_overlap(x, x + ddt[i], crel[j], crel[j] + 1.5 * cabs[j]) <= 0.0 for j in range(nc)):
            dev = (dbg[i] + isf * de[i]) * STEP_MIN / ddt[i]
            basal_x = scheduled_basal(minute_of_day(x, now, utc), sched_start, sched_rate)
            if in_uam or _grid_at(iob, origin, x) > 2.0 * basal_x:
                in_uam = dev > 0.0
                continue
            sens_devs.append(dev)
    raw_ratio = 1.0
    n_sens = len(sens_devs)
    if n_sens >= 24 and max_sched > 0.0:
        sens_devs.sort()
        if n_sens % 2 == 1:
            med = sens_devs[n_sens // 2]
        else:
            med = 0.5 * (sens_devs[n_sens // 2 - 1] + sens_devs[n_sens // 2])
        raw_ratio = 1.0 + med * (60.0 / STEP_MIN) / isf / max_sched  # oref0: max daily basal
    if not math.isnan(p[Param.SENSITIVITY_RATIO]):
        raw_ratio = p[Param.SENSITIVITY_RATIO]
    ratio = clamp(raw_ratio, 0.7, 1.2)
    if ratio != raw_ratio:
        reasons |= Reason.SENSITIVITY_BOUNDED
    isf_eff = isf / ratio
    basal_eff = sched_now * ratio
    csf = isf_eff / cr
    o[Out.SENSITIVITY_RATIO] = ratio

    span_start = min((cgm_t[c0] - now) / 60.0 if c0 < n_cgm else 0.0, 0.0)
    rem = [
        max(0.0, cg[j] - cmin[j] * _overlap(crel[j], crel[j] + 1.5 * cabs[j], -1e18, span_start))
        for j in range(nc)
    ]
    for i in range(n_pairs + 1):
        if i < n_pairs:
            x = (cgm_t[c0 + i] - now) / 60.0
            y = x + ddt[i]
        else:
            x = min((cgm_t[c0 + n_pairs] - now) / 60.0 if c0 < n_cgm else 0.0, 0.0)
            y = 0.0
        m_total = 0.0
        for j in range(nc):
            m_total += cmin[j] * _overlap(crel[j], crel[j] + 1.5 * cabs[j], x, y)
        if m_total <= 0.0:
            continue
        valid = i < n_pairs and 0.0 < ddt[i] <= 15.0
        obs = (dbg[i] + isf_eff * de[i]) / csf if valid else 0.0
        for j in range(nc):
            ov = cmin[j] * _overlap(crel[j], crel[j] + 1.5 * cabs[j], x, y)
            if ov <= 0.0:
                continue
            a_i = ov
            if valid and obs * ov / m_total > a_i:
                a_i = obs * ov / m_total
            rem[j] = max(0.0, rem[j] - a_i)
    cob = 0.0
    for j in range(nc):
        if crel[j] + 1.5 * cabs[j] <= 0.0:
            rem[j] = 0.0
        cob += rem[j]
    o[Out.COB] = cob

    sx = sy = sxx = sxy = nm = 0.0
    i = n_cgm - 1
    while i >= 0 and cgm_t[i] >= cgm_t[n_cgm - 1] - 15.0 * 60.0 - 1.0:
        x = (cgm_t[i] - cgm_t[n_cgm - 1]) / 60.0
        sx += x
        sy += cgm_v[i]
        sxx += x * x
        sxy += x * cgm_v[i]
        nm += 1.0
        i -= 1
    v_mom = 0.0
    if nm >= 3.0 and nm * sxx - sx * sx > 1e-9:
        v_mom = (nm * sxy - sx * sy) / (nm * sxx - sx * sx)
    ci = 0.0
    if n_pairs > 0 and c0 + n_pairs == n_cgm - 1 and 0.0 < ddt[n_pairs - 1] <= 15.0:
        ci = (dbg[n_pairs - 1] + isf_eff * de[n_pairs - 1]) * STEP_MIN / ddt[n_pairs - 1]
    o[Out.DEVIATION] = ci

    v_rc = 0.0
    if not carbs_active:
        disc = cov = 0.0
        for i in range(n_pairs):
            if ddt[i] <= 0.0 or ddt[i] > 15.0:
                continue
            if (cgm_t[c0 + i] - cgm_t[n_cgm - 1]) / 60.0 < -30.0:
                continue
            disc += dbg[i] + isf_eff * de[i]
            cov += ddt[i]
        if cov >= 20.0:
            v_rc = disc / cov

    pd = ud = zc = 0.0
    eventual = bg
    min_pred = min_guard = 1e9
    for k in range(N_FC):
        t = float(k * STEP_MIN)
        if k > 0:
            w = 1.0 - k / 12.0
            pd += ci * (w if w > 0.0 else 0.0)
            if uam and ci > 0.0:
                w = 1.0 - k / 36.0
                ud += ci * (w if w > 0.0 else 0.0)
        ins = -isf_eff * (eff[origin + k] - eff[origin])
        carb = 0.0
        for j in range(nc):
            if rem[j] <= 0.0:
                continue
            e0 = -crel[j] - CARB_DELAY_MIN
            if e0 < cabs[j]:
                f0 = carb_fraction(e0, cabs[j], cmodel)
                gfrac = (carb_fraction(e0 + t, cabs[j], cmodel) - f0) / (1.0 - f0)
            else:
                end = crel[j] + 1.5 * cabs[j]
                gfrac = t / end if end > 0.0 else 1.0
                gfrac = min(gfrac, 1.0)
            carb += rem[j] * gfrac
        carb *= csf
        rc = v_rc * (t - t * t / 120.0) if t <= 60.0 else v_rc * 30.0
        w = max(1.0 - t / 15.0, 0.0)
        x = clamp(bg + w * v_mom * t + (1.0 - w) * (ins + carb + rc), 39.0, 400.0)
        o[O_LINES + k] = x
        min_pred = min(min_pred, x)
        eventual = x
        x = clamp(bg + ins + pd, 39.0, 400.0)
        o[O_LINES + N_FC + k] = x
        min_guard = min(min_guard, x)
        x = clamp(bg + ins + pd + carb, 39.0, 400.0)
        o[O_LINES + 2 * N_FC + k] = x
        if cob > 0.0 and x < min_guard:
            min_guard = x
        x = clamp(bg + ins + ud, 39.0, 400.0)
        o[O_LINES + 3 * N_FC + k] = x
        if uam and x < min_guard:
            min_guard = x
        zc += zbins[origin + k]
        x = -isf_eff * ((eff[origin + k] - eff[origin]) + (zc - ziob[origin + k]))
        o[O_LINES + 4 * N_FC + k] = clamp(bg + x, 39.0, 400.0)
    o[Out.EVENTUAL_BG] = eventual
    o[Out.MIN_PRED_BG] = min_pred
    o[Out.MIN_GUARD_BG] = min_guard

    req = smb = 0.0
    desired = sched_now
    if mode == 1:
        reasons |= Reason.SUSPEND_ONLY_MODE
        no_increase = True
    if mode == 0:
        reasons |= Reason.OPEN_LOOP
    if no_increase:
        reasons |= Reason.NO_INCREASE
    iob_now = o[Out.IOB]
    last_bolus, last_smb = p[Param.LAST_BOLUS_S], p[Param.LAST_SMB_S]
    kinds, times = dose_kind.tolist(), dose_t_s.tolist()
    bolus_times = [times[i] for i in range(len(kinds)) if kinds[i] == 0.0]
    if bolus_times and (math.isnan(last_bolus) or bolus_times[-1] > last_bolus):
        last_bolus = bolus_times[-1]
    if p[Param.UNCERTAIN_DELIVERY] != 0.0:
        reasons |= Reason.UNCERTAIN_DELIVERY
        action = 0
    elif stale or future:
        if running and run_rate > sched_now:
            action = 2
        elif running and run_rate == 0.0 and run_rem > 30.0:
            action = 1
            desired = 0.0
            duration = 30.0
            reasons |= Reason.ZERO_TEMP_CUT
    else:
        low = False
        if bg < threshold:
            low = True
            reasons |= Reason.LOW_GLUCOSE
        elif min_guard < threshold:
            low = True
            reasons |= Reason.PREDICTED_LOW
        upper = max_safe
        if low:
            desired = 0.0
        elif mode == 1:
            desired = sched_now
        else:
            if eventual < min_bg:
                reasons |= Reason.BELOW_RANGE
                req = (eventual - target) / isf_eff
                desired = max(basal_eff + 2.0 * req, 0.0)
            elif eventual <= max_bg:
                reasons |= Reason.IN_RANGE
                desired = basal_eff
            else:
                reasons |= Reason.ABOVE_RANGE
                req = (min(min_pred, eventual) - target) / isf_eff
                desired = basal_eff
                if req > 0.0:
                    room = max_iob_eff - iob_now
                    if max_iob_eff <= 0.0:
                        reasons |= Reason.MAX_IOB_ZERO
                        req = 0.0
                    elif req > room:
                        reasons |= Reason.MAX_IOB_LIMIT
                        req = max(room, 0.0)
                    if mode == 3 and req > 0.0 and not no_increase:
                        if p[Param.BOLUS_IN_PROGRESS] != 0.0:
                            reasons |= Reason.SMB_BOLUS_RUNNING
                        elif not math.isnan(last_bolus) and last_bolus > now:
                            reasons |= Reason.SMB_BOLUS_NEWER
                        elif (not math.isnan(last_smb) and now - last_smb < 180.0) or (
                            not math.isnan(last_bolus) and now - last_bolus < 180.0
                        ):
                            reasons |= Reason.SMB_TOO_SOON
                        else:
                            smb = 0.5 * req
                            if smb > 0.5 * sched_now:
                                smb = 0.5 * sched_now
                                reasons |= Reason.SMB_LIMITED
                            if smb > max_bolus_eff:
                                smb = max_bolus_eff
                                reasons |= Reason.SMB_LIMITED
                            smb = _floor_to(smb, p[Param.BOLUS_INCREMENT])
                    desired = basal_eff + 2.0 * (req - smb)
            room = max(max_iob_eff - iob_now - smb, 0.0)
            if sched_now + 2.0 * room < upper:
                upper = sched_now + 2.0 * room
                if desired > upper:
                    reasons |= Reason.MAX_IOB_LIMIT
            elif desired > upper:
                reasons |= Reason.MAX_BASAL_LIMIT
        if no_increase and sched_now < upper:
            upper = sched_now
        upper = max(upper, 0.0)
        desired = min(desired, upper)
        if no_increase:
            smb = 0.0
        if desired != sched_now:
            desired = _floor_to(desired, p[Param.BASAL_INCREMENT])
        if (
            running
            and run_rem > 20.0
            and run_rate <= upper
            and desired - run_rate <= 0.2 * run_rate
            and run_rate - desired <= 0.2 * run_rate
        ):
            action = 0
            reasons |= Reason.TEMP_KEPT
        elif desired == sched_now and not low:
            action = 2 if running else 0
            if running and run_rate == 0.0:
                reasons |= Reason.RESUME
        else:
            action = 1
            duration = 30.0
    if action == 1:
        o[Out.RATE] = desired
        o[Out.DURATION] = duration
    elif action == 2:
        o[Out.RATE] = sched_now
        o[Out.DURATION] = 0.0
    else:
        o[Out.RATE] = cur_rate
        o[Out.DURATION] = run_rem if running else 0.0
    o[Out.ACTION] = action
    o[Out.SMB] = smb
    o[Out.INSULIN_REQ] = req
    enact = mode != 0 and p[Param.UNCERTAIN_DELIVERY] == 0.0 and (action != 0 or smb > 0.0)
    o[Out.ENACT] = 1.0 if enact else 0.0
    o[Out.REASONS] = float(reasons)
    out[:] = o
    return 0
