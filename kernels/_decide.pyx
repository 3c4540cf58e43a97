# Full dosing decision on packed arrays: insulin grid, dynamic carbs, sensitivity, forecast lines
# and every safety rule; kernels/reference/decide.py is the line-by-line Python twin.
from libc.math cimport floor, isfinite, isinf, isnan
from kernels._core cimport (
    STEP_MIN, N_FUTURE, HIST_STEPS, MAX_LAG, MAX_CARBS, MAX_DEVS,
    clamp, carb_fraction, ffloor, curve_table, convolve, deposit_doses, minute_of_day, scheduled_basal,
)

cdef enum:
    P_NOW = 0
    P_MODE = 1
    P_AGE = 2
    P_ISF = 3
    P_CR = 4
    P_MIN_BG = 5
    P_MAX_BG = 6
    P_SUSPEND = 7
    P_MAX_BASAL = 8
    P_MAX_IOB = 9
    P_MAX_BOLUS = 10
    P_TD = 11
    P_TP = 12
    P_DELAY = 13
    P_IMODEL = 14
    P_CMODEL = 15
    P_UTC = 16
    P_NOISE = 17
    P_RUN_RATE = 18
    P_RUN_REM = 19
    P_BOLUSING = 20
    P_UNCERTAIN = 21
    P_LAST_BOLUS = 22
    P_LAST_SMB = 23
    P_SENS = 24
    P_BASAL_INC = 25
    P_BOLUS_INC = 26
    P_UAM = 27
    N_PARAMS = 28

    O_ACTION = 0
    O_RATE = 1
    O_DURATION = 2
    O_SMB = 3
    O_REASONS = 4
    O_IOB = 5
    O_COB = 6
    O_BG = 7
    O_EVENTUAL = 8
    O_MIN_GUARD = 9
    O_SENS = 10
    O_REQ = 11
    O_MAX_SAFE = 12
    O_SCHED = 13
    O_DEV = 14
    O_ENACT = 15
    O_NFC = 16
    O_THRESHOLD = 17
    O_MIN_PRED = 18
    O_ACTIVITY = 19
    O_LINES = 20
    N_FC = 73
    N_OUT = 20 + 5 * 73

    GRID = HIST_STEPS + MAX_LAG + 2 + N_FUTURE + 1

    R_NO_CGM = 1 << 0
    R_STALE = 1 << 1
    R_FUTURE = 1 << 2
    R_NOISY = 1 << 3
    R_FLAT = 1 << 4
    R_UNCERTAIN = 1 << 5
    R_OPEN_LOOP = 1 << 6
    R_LGS_MODE = 1 << 7
    R_LOW = 1 << 8
    R_PRED_LOW = 1 << 9
    R_BELOW = 1 << 10
    R_IN_RANGE = 1 << 11
    R_ABOVE = 1 << 12
    R_MAX_BASAL = 1 << 13
    R_MAX_IOB = 1 << 14
    R_MAX_IOB_ZERO = 1 << 15
    R_HARD = 1 << 16
    R_NO_INCREASE = 1 << 17
    R_TEMP_KEPT = 1 << 18
    R_SMB_RUNNING = 1 << 19
    R_SMB_NEWER = 1 << 20
    R_SMB_SOON = 1 << 21
    R_SMB_LIMITED = 1 << 22
    R_SENS_BOUNDED = 1 << 23
    R_ZERO_CUT = 1 << 24
    R_RESUME = 1 << 25

cdef double CARB_DELAY_MIN = 10.0
# Curve table of the last insulin model seen (filled with the GIL held, copied per call).
cdef double _tab_c[MAX_LAG + 1]
cdef double _tab_a[MAX_LAG + 1]
cdef double _tab_key[4]
cdef Py_ssize_t _tab_lag = -1
cdef double HARD_BOLUS[5]
cdef double HARD_BASAL[5]
cdef double HARD_IOB[5]
HARD_BOLUS[:] = [5.0, 10.0, 17.0, 25.0, 60.0]
HARD_BASAL[:] = [2.0, 5.0, 10.0, 12.0, 25.0]
HARD_IOB[:] = [7.0, 13.0, 22.0, 30.0, 70.0]


def layout():
    """The slot numbers compiled into this module (checked against kernels._layout)."""
    return {"N_PARAMS": N_PARAMS, "N_OUT": N_OUT, "N_FORECAST": N_FC, "LINES": O_LINES,
            "MIN_PRED": O_MIN_PRED, "UAM": P_UAM, "RESUME": R_RESUME,
            "LINE_ZT": O_LINES + 4 * N_FC}


cdef inline double overlap(double a0, double a1, double b0, double b1) noexcept nogil:
    """Length of [a0, a1] ∩ [b0, b1]."""
    cdef double lo = a0 if a0 > b0 else b0
    cdef double hi = a1 if a1 < b1 else b1
    return hi - lo if hi > lo else 0.0


cdef inline double grid_at(const double* e, Py_ssize_t origin, Py_ssize_t n, double rel_min) noexcept nogil:
    """Linear interpolation of a grid series at rel_min minutes from now."""
    cdef double p = rel_min / STEP_MIN + origin
    cdef Py_ssize_t i = <Py_ssize_t>ffloor(p)
    if i < 0:
        return e[0]
    if i >= n - 1:
        return e[n - 1]
    return e[i] + (e[i + 1] - e[i]) * (p - i)


cdef double select_kth(double* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """k-th smallest of a[0:n] (Hoare quickselect, reorders a): O(n) instead of a sort."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j
    cdef double pivot, tmp
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


cdef inline double floor_to(double x, double inc) noexcept nogil:
    """Round down to the pump increment: ⌊x/inc⌋·inc."""
    if inc <= 0.0:
        return x
    return ffloor(x / inc + 1e-9) * inc


cdef int _decide(const double* p, const double* cgm_t, const double* cgm_v, Py_ssize_t n_cgm,
                 const double* dose_t, const double* dose_kind, const double* dose_amount,
                 const double* dose_dur, Py_ssize_t n_doses,
                 const double* carb_t, const double* carb_g, const double* carb_abs,
                 Py_ssize_t n_carbs, const double* sched_start, const double* sched_rate,
                 Py_ssize_t n_sched, const double* c, const double* act, Py_ssize_t lag,
                 double* out) noexcept nogil:
    cdef double now = p[P_NOW]
    cdef int mode = <int>p[P_MODE]
    cdef int age = <int>p[P_AGE]
    cdef double isf = p[P_ISF], cr = p[P_CR], min_bg = p[P_MIN_BG], max_bg = p[P_MAX_BG]
    cdef double td = p[P_TD], tp = p[P_TP], delay = p[P_DELAY]
    cdef int imodel = <int>p[P_IMODEL], cmodel = <int>p[P_CMODEL]
    cdef double utc = p[P_UTC]
    cdef long long reasons = 0
    cdef double bins[GRID]
    cdef double iob[GRID]
    cdef double eff[GRID]
    cdef double zbins[GRID]
    cdef double ziob[GRID]
    cdef double dbg[MAX_DEVS]
    cdef double de[MAX_DEVS]
    cdef double ddt[MAX_DEVS]
    cdef double sens_devs[MAX_DEVS]
    cdef double rem[MAX_CARBS]
    cdef double crel[MAX_CARBS]
    cdef double cmin[MAX_CARBS]
    cdef double cg[MAX_CARBS]
    cdef double cabs[MAX_CARBS]
    cdef Py_ssize_t origin, n_bins, i, j, jj, k, l, n_pairs, n_sens, first, c0, nc, n_live
    cdef Py_ssize_t live[MAX_CARBS]
    cdef double zc = 0.0
    cdef double acc, x, y, sched_now, max_sched, max_basal_eff, max_iob_eff, max_bolus_eff, max_safe
    cdef double bg, last_rel, age_min, lo_v, hi_v, ratio, raw_ratio, isf_eff, basal_eff, csf
    cdef double med, span_start, m_total, obs, a_i, o, cob, e0, f0, gfrac, end, v_mom, v_rc
    cdef double sx, sy, sxx, sxy, nm, disc, cov, ci, t, w, ins, carb, rc, pd, ud, threshold, target
    cdef double last_bolus, eventual, min_pred, min_guard, req, desired, upper, room, smb, cur_rate, act_now
    cdef double run_rate = p[P_RUN_RATE], run_rem = p[P_RUN_REM]
    cdef bint stale = False, future = False, no_increase = False, carbs_active = False
    cdef bint running, low, flat, valid, in_uam
    cdef int action = 0
    cdef double duration = 0.0

    for i in range(N_OUT):
        out[i] = 0.0
    out[O_NFC] = N_FC

    # ---- limits: settings can only tighten the age-group hard limits
    max_basal_eff = p[P_MAX_BASAL]
    if max_basal_eff > HARD_BASAL[age]:
        max_basal_eff = HARD_BASAL[age]
        reasons |= R_HARD
    max_iob_eff = p[P_MAX_IOB]
    if max_iob_eff > HARD_IOB[age]:
        max_iob_eff = HARD_IOB[age]
        reasons |= R_HARD
    max_bolus_eff = p[P_MAX_BOLUS]
    if max_bolus_eff > 30.0:
        max_bolus_eff = 30.0
    if max_bolus_eff > HARD_BOLUS[age]:
        max_bolus_eff = HARD_BOLUS[age]
        reasons |= R_HARD
    sched_now = scheduled_basal(minute_of_day(0.0, now, utc), sched_start, sched_rate, n_sched)
    max_sched = 0.0
    for i in range(n_sched):
        if sched_rate[i] > max_sched:
            max_sched = sched_rate[i]
    max_safe = max_basal_eff
    if 3.0 * max_sched < max_safe:
        max_safe = 3.0 * max_sched
    if 4.0 * sched_now < max_safe:
        max_safe = 4.0 * sched_now
    running = (not isnan(run_rate)) and run_rem > 0.0
    cur_rate = run_rate if running else sched_now
    threshold = min_bg - 0.5 * (min_bg - 40.0)
    if p[P_SUSPEND] > threshold:
        threshold = p[P_SUSPEND]
    target = 0.5 * (min_bg + max_bg)
    out[O_SCHED] = sched_now
    out[O_MAX_SAFE] = max_safe
    out[O_THRESHOLD] = threshold

    # ---- insulin on a 5-min grid anchored at now: bins[k + origin] for k = -origin … 72
    origin = HIST_STEPS + lag + 1
    n_bins = origin + N_FUTURE + 1
    for i in range(n_bins):
        bins[i] = 0.0
        zbins[i] = 0.0
    deposit_doses(bins, origin, n_bins, now, utc, origin * STEP_MIN, dose_t, dose_kind,
                  dose_amount, dose_dur, n_doses, sched_start, sched_rate, n_sched)
    convolve(bins, n_bins, c, lag, iob)
    acc = 0.0
    for i in range(n_bins):
        acc += bins[i]
        eff[i] = acc - iob[i]  # insulin that has acted by grid point i (cumulative)
    act_now = 0.0
    for l in range(lag + 1):
        if origin - l >= 0:
            act_now += bins[origin - l] * act[l]
    out[O_IOB] = iob[origin]
    out[O_ACTIVITY] = act_now
    # zero temp from now on: -scheduled basal in 5-min pulses split between their grid points
    for k in range(N_FUTURE):
        x = -scheduled_basal(minute_of_day(k * STEP_MIN + 2.5, now, utc), sched_start,
                             sched_rate, n_sched) * STEP_MIN / 60.0
        zbins[origin + k] += 0.5 * x
        zbins[origin + k + 1] += 0.5 * x
    convolve(zbins, n_bins, c, lag, ziob)

    if n_cgm == 0:
        reasons |= R_NO_CGM
        out[O_REASONS] = <double>reasons
        out[O_RATE] = cur_rate
        out[O_DURATION] = run_rem if running else 0.0
        out[O_SENS] = 1.0
        return 0

    # ---- data quality
    bg = cgm_v[n_cgm - 1]
    last_rel = (cgm_t[n_cgm - 1] - now) / 60.0
    age_min = -last_rel
    out[O_BG] = bg
    if age_min > 12.0:
        stale = True
        reasons |= R_STALE
    if age_min < -5.0:
        future = True
        reasons |= R_FUTURE
    if p[P_NOISE] >= 3.0:
        reasons |= R_NOISY
        no_increase = True
    # flat: every reading of the last 45 min identical, the window really covered
    flat = False
    first = n_cgm - 1
    while first > 0 and cgm_t[first - 1] >= cgm_t[n_cgm - 1] - 47.5 * 60.0:
        first -= 1
    if cgm_t[n_cgm - 1] - cgm_t[first] >= 42.5 * 60.0:
        flat = True
        for i in range(first, n_cgm):
            if cgm_v[i] != bg:
                flat = False
                break
    if flat:
        reasons |= R_FLAT
        no_increase = True
    if stale or future:
        no_increase = True

    # ---- pairs of consecutive readings in the analysed window: Δglucose, Δinsulin effect
    c0 = 0
    while c0 < n_cgm and cgm_t[c0] - now < -HIST_STEPS * STEP_MIN * 60.0:
        c0 += 1
    if n_cgm - 1 - c0 > MAX_DEVS:  # very dense CGM: keep the most recent pairs
        c0 = n_cgm - 1 - MAX_DEVS
    n_pairs = 0
    for i in range(c0 + 1, n_cgm):
        if n_pairs >= MAX_DEVS:
            break
        x = (cgm_t[i - 1] - now) / 60.0
        y = (cgm_t[i] - now) / 60.0
        if y > 0.0:
            break
        dbg[n_pairs] = cgm_v[i] - cgm_v[i - 1]
        de[n_pairs] = grid_at(eff, origin, n_bins, y) - grid_at(eff, origin, n_bins, x)
        ddt[n_pairs] = y - x
        n_pairs += 1

    # ---- carb entries (the last MAX_CARBS), their min-rate windows [t, t + 1.5·T]
    nc = n_carbs if n_carbs < MAX_CARBS else MAX_CARBS
    for j in range(nc):
        i = n_carbs - nc + j
        crel[j] = (carb_t[i] - now) / 60.0
        cg[j] = carb_g[i]
        cabs[j] = carb_abs[i]
        cmin[j] = carb_g[i] / (1.5 * carb_abs[i])  # g per min
        if crel[j] <= 0.0 and crel[j] + 1.5 * cabs[j] > 0.0:
            carbs_active = True

    # entries whose window meets the analysed span [first reading, now]; the others overlap no
    # interval below, so skipping them changes no sum
    span_start = (cgm_t[c0] - now) / 60.0 if c0 < n_cgm else 0.0
    if span_start > 0.0:
        span_start = 0.0
    n_live = 0
    for j in range(nc):
        if crel[j] < 0.0 and crel[j] + 1.5 * cabs[j] > span_start:
            live[n_live] = j
            n_live += 1

    # ---- sensitivity ratio from deviations outside carb windows (autosens-like)
    # oref0 autosens: a deviation while net IOB exceeds 2 × the scheduled basal (U against U/h),
    # and the positive ones that follow it, belong to an unannounced meal, not to sensitivity
    n_sens = 0
    in_uam = False
    for i in range(n_pairs):
        if ddt[i] <= 0.0 or ddt[i] > 15.0:
            continue
        x = (cgm_t[c0 + i] - now) / 60.0
        valid = True
        for jj in range(n_live):
            j = live[jj]
            if overlap(x, x + ddt[i], crel[j], crel[j] + 1.5 * cabs[j]) > 0.0:
                valid = False
                break
        if valid:
            o = (dbg[i] + isf * de[i]) * STEP_MIN / ddt[i]
            if in_uam or grid_at(iob, origin, n_bins, x) > 2.0 * scheduled_basal(
                    minute_of_day(x, now, utc), sched_start, sched_rate, n_sched):
                in_uam = o > 0.0
                continue
            sens_devs[n_sens] = o
            n_sens += 1
    raw_ratio = 1.0
    if n_sens >= 24 and max_sched > 0.0:
        med = select_kth(sens_devs, n_sens, n_sens // 2)
        if n_sens % 2 == 0:  # the lower middle is the largest value left of the upper one
            x = sens_devs[0]
            for i in range(1, n_sens // 2):
                if sens_devs[i] > x:
                    x = sens_devs[i]
            med = 0.5 * (x + med)
        raw_ratio = 1.0 + med * (60.0 / STEP_MIN) / isf / max_sched  # oref0: max daily basal
    if not isnan(p[P_SENS]):
        raw_ratio = p[P_SENS]
    ratio = clamp(raw_ratio, 0.7, 1.2)
    if ratio != raw_ratio:
        reasons |= R_SENS_BOUNDED
    isf_eff = isf / ratio
    basal_eff = sched_now * ratio
    csf = isf_eff / cr
    out[O_SENS] = ratio

    # ---- carbs absorbed as observed, at least at the minimum rate (all gone by 1.5·T)
    for j in range(nc):
        rem[j] = cg[j] - cmin[j] * overlap(crel[j], crel[j] + 1.5 * cabs[j], -1e18, span_start)
        if rem[j] < 0.0:
            rem[j] = 0.0
    for i in range(n_pairs + 1):
        if i < n_pairs:
            x = (cgm_t[c0 + i] - now) / 60.0
            y = x + ddt[i]
        else:
            x = (cgm_t[c0 + n_pairs] - now) / 60.0 if c0 < n_cgm else 0.0
            y = 0.0
            if x > 0.0:
                x = 0.0
        m_total = 0.0
        for jj in range(n_live):
            j = live[jj]
            m_total += cmin[j] * overlap(crel[j], crel[j] + 1.5 * cabs[j], x, y)
        if m_total <= 0.0:
            continue
        valid = i < n_pairs and ddt[i] > 0.0 and ddt[i] <= 15.0
        obs = (dbg[i] + isf_eff * de[i]) / csf if valid else 0.0
        for jj in range(n_live):
            j = live[jj]
            o = cmin[j] * overlap(crel[j], crel[j] + 1.5 * cabs[j], x, y)
            if o <= 0.0:
                continue
            a_i = o
            if valid and obs * o / m_total > a_i:
                a_i = obs * o / m_total
            rem[j] -= a_i
            if rem[j] < 0.0:
                rem[j] = 0.0
    cob = 0.0
    for j in range(nc):
        if crel[j] + 1.5 * cabs[j] <= 0.0:
            rem[j] = 0.0
        cob += rem[j]
    out[O_COB] = cob

    # ---- momentum (least squares over the last 15 min) and current deviation
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    sxy = 0.0
    nm = 0.0
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
    if n_pairs > 0 and c0 + n_pairs == n_cgm - 1 and ddt[n_pairs - 1] > 0.0 and ddt[n_pairs - 1] <= 15.0:
        ci = (dbg[n_pairs - 1] + isf_eff * de[n_pairs - 1]) * STEP_MIN / ddt[n_pairs - 1]
    out[O_DEV] = ci

    # ---- retrospective correction: unexplained change over the last 30 min (no carbs active)
    v_rc = 0.0
    if not carbs_active:
        disc = 0.0
        cov = 0.0
        for i in range(n_pairs):
            if ddt[i] <= 0.0 or ddt[i] > 15.0:
                continue
            if (cgm_t[c0 + i] - cgm_t[n_cgm - 1]) / 60.0 < -30.0:
                continue
            disc += dbg[i] + isf_eff * de[i]
            cov += ddt[i]
        if cov >= 20.0:
            v_rc = disc / cov

    # ---- forecast lines, 73 points from now
    pd = 0.0
    ud = 0.0
    eventual = bg
    min_pred = 1e9
    min_guard = 1e9
    for k in range(N_FC):
        t = k * STEP_MIN
        if k > 0:
            w = 1.0 - k / 12.0
            pd += ci * (w if w > 0.0 else 0.0)
            if p[P_UAM] != 0.0 and ci > 0.0:
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
                if gfrac > 1.0:
                    gfrac = 1.0
            carb += rem[j] * gfrac
        carb *= csf
        if t <= 60.0:
            rc = v_rc * (t - t * t / 120.0)
        else:
            rc = v_rc * 30.0
        w = 1.0 - t / 15.0
        if w < 0.0:
            w = 0.0
        x = clamp(bg + w * v_mom * t + (1.0 - w) * (ins + carb + rc), 39.0, 400.0)
        out[O_LINES + k] = x
        if x < min_pred:
            min_pred = x
        eventual = x
        x = clamp(bg + ins + pd, 39.0, 400.0)
        out[O_LINES + N_FC + k] = x
        if x < min_guard:
            min_guard = x
        x = clamp(bg + ins + pd + carb, 39.0, 400.0)
        out[O_LINES + 2 * N_FC + k] = x
        if cob > 0.0 and x < min_guard:
            min_guard = x
        x = clamp(bg + ins + ud, 39.0, 400.0)
        out[O_LINES + 3 * N_FC + k] = x
        if p[P_UAM] != 0.0 and x < min_guard:
            min_guard = x
        zc += zbins[origin + k]  # zero-temp insulin removed up to this point (≤ 0)
        x = -isf_eff * ((eff[origin + k] - eff[origin]) + (zc - ziob[origin + k]))
        out[O_LINES + 4 * N_FC + k] = clamp(bg + x, 39.0, 400.0)
    out[O_EVENTUAL] = eventual
    out[O_MIN_PRED] = min_pred
    out[O_MIN_GUARD] = min_guard

    # ---- decision
    # the latest bolus is the pump's report or the newest bolus in the history, whichever is later
    last_bolus = p[P_LAST_BOLUS]
    i = n_doses - 1
    while i >= 0 and dose_kind[i] != 0.0:
        i -= 1
    if i >= 0 and (isnan(last_bolus) or dose_t[i] > last_bolus):
        last_bolus = dose_t[i]
    req = 0.0
    smb = 0.0
    desired = sched_now
    if mode == 1:
        reasons |= R_LGS_MODE
        no_increase = True
    if mode == 0:
        reasons |= R_OPEN_LOOP
    if no_increase:
        reasons |= R_NO_INCREASE
    if p[P_UNCERTAIN] != 0.0:
        reasons |= R_UNCERTAIN
        action = 0
    elif stale or future:
        if running and run_rate > sched_now:
            action = 2
        elif running and run_rate == 0.0 and run_rem > 30.0:
            action = 1
            desired = 0.0
            duration = 30.0
            reasons |= R_ZERO_CUT
    else:
        low = False
        if bg < threshold:
            low = True
            reasons |= R_LOW
        elif min_guard < threshold:
            low = True
            reasons |= R_PRED_LOW
        upper = max_safe
        if low:
            desired = 0.0
        elif mode == 1:
            desired = sched_now
        else:
            if eventual < min_bg:
                reasons |= R_BELOW
                req = (eventual - target) / isf_eff
                desired = basal_eff + 2.0 * req
                if desired < 0.0:
                    desired = 0.0
            elif eventual <= max_bg:
                reasons |= R_IN_RANGE
                desired = basal_eff
            else:
                reasons |= R_ABOVE
                req = ((min_pred if min_pred < eventual else eventual) - target) / isf_eff
                desired = basal_eff
                if req > 0.0:
                    room = max_iob_eff - out[O_IOB]
                    if max_iob_eff <= 0.0:
                        reasons |= R_MAX_IOB_ZERO
                        req = 0.0
                    elif req > room:
                        reasons |= R_MAX_IOB
                        req = room if room > 0.0 else 0.0
                    if mode == 3 and req > 0.0 and not no_increase:
                        if p[P_BOLUSING] != 0.0:
                            reasons |= R_SMB_RUNNING
                        elif not isnan(last_bolus) and last_bolus > now:
                            reasons |= R_SMB_NEWER
                        elif ((not isnan(p[P_LAST_SMB]) and now - p[P_LAST_SMB] < 180.0)
                              or (not isnan(last_bolus) and now - last_bolus < 180.0)):
                            reasons |= R_SMB_SOON
                        else:
                            smb = 0.5 * req
                            if smb > 0.5 * sched_now:
                                smb = 0.5 * sched_now
                                reasons |= R_SMB_LIMITED
                            if smb > max_bolus_eff:
                                smb = max_bolus_eff
                                reasons |= R_SMB_LIMITED
                            smb = floor_to(smb, p[P_BOLUS_INC])
                    desired = basal_eff + 2.0 * (req - smb)
            # insulin above the schedule must fit within max IOB, SMB included
            room = max_iob_eff - out[O_IOB] - smb
            if room < 0.0:
                room = 0.0
            if sched_now + 2.0 * room < upper:
                upper = sched_now + 2.0 * room
                if desired > upper:
                    reasons |= R_MAX_IOB
            elif desired > upper:
                reasons |= R_MAX_BASAL
        if no_increase and sched_now < upper:
            upper = sched_now
        if upper < 0.0:
            upper = 0.0
        if desired > upper:
            desired = upper
        if no_increase:
            smb = 0.0
        if desired != sched_now:
            desired = floor_to(desired, p[P_BASAL_INC])
        if (running and run_rem > 20.0 and run_rate <= upper
                and (desired - run_rate <= 0.2 * run_rate and run_rate - desired <= 0.2 * run_rate)):
            action = 0
            reasons |= R_TEMP_KEPT
        elif desired == sched_now and not low:
            action = 2 if running else 0
            if running and run_rate == 0.0:
                reasons |= R_RESUME
        else:
            action = 1
            duration = 30.0
    if action == 1:
        out[O_RATE] = desired
        out[O_DURATION] = duration
    elif action == 2:
        out[O_RATE] = sched_now
        out[O_DURATION] = 0.0
    else:
        out[O_RATE] = cur_rate
        out[O_DURATION] = run_rem if running else 0.0
    out[O_ACTION] = action
    out[O_SMB] = smb
    out[O_REQ] = req
    out[O_ENACT] = 1.0 if (mode != 0 and p[P_UNCERTAIN] == 0.0 and (action != 0 or smb > 0.0)) else 0.0
    out[O_REASONS] = <double>reasons
    return 0


cdef inline bint _sorted_finite(const double* t, Py_ssize_t n) noexcept nogil:
    """All finite and non-decreasing (no early exit: branch-free and vectorisable)."""
    cdef Py_ssize_t i
    cdef bint ok = True
    for i in range(n):
        ok = ok & isfinite(t[i])
    for i in range(1, n):
        ok = ok & (t[i] >= t[i - 1])
    return ok


cdef inline bint _all_in(const double* v, Py_ssize_t n, double lo, double hi) noexcept nogil:
    """Every value within [lo, hi] (NaN fails)."""
    cdef Py_ssize_t i
    cdef bint ok = True
    for i in range(n):
        ok = ok & (v[i] >= lo) & (v[i] <= hi)
    return ok


cdef const char* _check(const double* p, const double* cgm_t, const double* cgm_v, Py_ssize_t n_cgm,
                        const double* dose_t, const double* dose_kind, const double* dose_amount,
                        const double* dose_dur, Py_ssize_t n_doses, const double* carb_t,
                        const double* carb_g, const double* carb_abs, Py_ssize_t n_carbs,
                        const double* sched_start, const double* sched_rate,
                        Py_ssize_t n_sched) noexcept nogil:
    """Reject anything the kernel cannot dose safely from (message) — NULL when all is well.
    The packed path skips pydantic, so the bounds that keep the kernel in its buffers and the
    maths meaningful are checked here, in O(n)."""
    cdef Py_ssize_t i
    cdef bint ok
    if not isfinite(p[P_NOW]):
        return "now must be finite"
    if not (p[P_MODE] == 0 or p[P_MODE] == 1 or p[P_MODE] == 2 or p[P_MODE] == 3):
        return "mode must be 0-3"
    if not (p[P_AGE] == 0 or p[P_AGE] == 1 or p[P_AGE] == 2 or p[P_AGE] == 3 or p[P_AGE] == 4):
        return "age group must be 0-4"
    if not (p[P_ISF] >= 10.0 and p[P_ISF] <= 500.0 and p[P_CR] >= 2.0 and p[P_CR] <= 150.0):
        return "ISF must be 10-500 and carb ratio 2-150"
    if not (p[P_MIN_BG] >= 70.0 and p[P_MAX_BG] >= p[P_MIN_BG] and p[P_MAX_BG] <= 200.0):
        return "target range must satisfy 70 <= min <= max <= 200"
    if not (p[P_SUSPEND] >= 67.0 and p[P_SUSPEND] <= 110.0):
        return "suspend threshold must be 67-110"
    if not (p[P_MAX_BASAL] >= 0.0 and p[P_MAX_BASAL] <= 30.0 and p[P_MAX_IOB] >= 0.0
            and p[P_MAX_IOB] <= 70.0 and p[P_MAX_BOLUS] >= 0.0 and p[P_MAX_BOLUS] <= 30.0):
        return "max basal 0-30, max IOB 0-70 and max bolus 0-30"
    if not (p[P_TD] >= 120.0 and p[P_TD] <= 480.0 and p[P_DELAY] >= 0.0 and p[P_DELAY] <= 60.0
            and p[P_TP] >= 10.0 and p[P_TP] < 0.5 * p[P_TD]):
        return "insulin duration 120-480, delay 0-60, peak >= 10 and below half the duration"
    if not ((p[P_IMODEL] == 0 or p[P_IMODEL] == 1) and (p[P_CMODEL] == 0 or p[P_CMODEL] == 1)):
        return "insulin and carb model must be 0 or 1"
    if not (isfinite(p[P_UTC]) and p[P_NOISE] >= 0.0 and p[P_NOISE] <= 4.0):
        return "UTC offset must be finite and noise 0-4"
    if not (isnan(p[P_RUN_RATE]) or (p[P_RUN_RATE] >= 0.0 and p[P_RUN_RATE] <= 30.0)):
        return "running temp rate must be NaN (none) or 0-30"
    if not (p[P_RUN_REM] >= 0.0 and p[P_RUN_REM] <= 1440.0):
        return "running temp remaining must be 0-1440 min"
    if not (isfinite(p[P_BOLUSING]) and isfinite(p[P_UNCERTAIN]) and isfinite(p[P_UAM])):
        return "flags must be finite"
    if isinf(p[P_LAST_BOLUS]) or isinf(p[P_LAST_SMB]):
        return "last bolus / SMB times must be NaN (none) or finite"
    if not (isnan(p[P_SENS]) or (p[P_SENS] > 0.0 and p[P_SENS] <= 5.0)):
        return "sensitivity ratio must be NaN (computed) or in (0, 5]"
    if not (p[P_BASAL_INC] > 0.0 and p[P_BASAL_INC] <= 1.0 and p[P_BOLUS_INC] > 0.0
            and p[P_BOLUS_INC] <= 1.0):
        return "pump increments must be in (0, 1]"
    if not _sorted_finite(cgm_t, n_cgm) or not _all_in(cgm_v, n_cgm, 39.0, 401.0):
        return "CGM times must be sorted and values 39-401"
    if not _sorted_finite(dose_t, n_doses) or not _all_in(dose_amount, n_doses, 0.0, 60.0) \
            or not _all_in(dose_dur, n_doses, 0.0, 1440.0) or not _all_in(dose_kind, n_doses, 0.0, 2.0):
        return "doses must be sorted, amounts 0-60, durations 0-1440 min, kinds 0-2"
    ok = True
    for i in range(n_doses):
        ok = ok & ((dose_kind[i] == 0.0) | (dose_kind[i] == 1.0) | (dose_kind[i] == 2.0))
    if not ok:
        return "dose kind must be 0, 1 or 2"
    if not _sorted_finite(carb_t, n_carbs) or not _all_in(carb_g, n_carbs, 0.0, 250.0) \
            or not _all_in(carb_abs, n_carbs, 30.0, 480.0):
        return "carbs must be sorted, 0-250 g, absorption 30-480 min"
    if n_sched == 0 or sched_start[0] != 0.0 or not _all_in(sched_rate, n_sched, 0.0, 30.0) \
            or not _all_in(sched_start, n_sched, 0.0, 1439.999):
        return "basal schedule must start at minute 0 with rates 0-30"
    for i in range(1, n_sched):
        if sched_start[i] <= sched_start[i - 1]:
            return "basal schedule must increase"
    return NULL


def decide_packed(const double[::1] params, const double[::1] cgm_t_s,
                  const double[::1] cgm_mg_dl, const double[::1] dose_t_s,
                  const double[::1] dose_kind, const double[::1] dose_amount,
                  const double[::1] dose_duration_min, const double[::1] carb_t_s,
                  const double[::1] carb_g, const double[::1] carb_absorption_min,
                  const double[::1] basal_start_min, const double[::1] basal_rate_u_per_h,
                  double[::1] out):
    """Full decision on packed arrays; fills `out` (kernels._layout.Out), ValueError if invalid."""
    global _tab_lag
    cdef int rc
    cdef const char* msg
    cdef const double* cgm_t = &cgm_t_s[0] if cgm_t_s.shape[0] else NULL
    cdef const double* cgm_v = &cgm_mg_dl[0] if cgm_t_s.shape[0] else NULL
    cdef const double* d_t = &dose_t_s[0] if dose_t_s.shape[0] else NULL
    cdef const double* d_k = &dose_kind[0] if dose_t_s.shape[0] else NULL
    cdef const double* d_a = &dose_amount[0] if dose_t_s.shape[0] else NULL
    cdef const double* d_d = &dose_duration_min[0] if dose_t_s.shape[0] else NULL
    cdef const double* c_t = &carb_t_s[0] if carb_t_s.shape[0] else NULL
    cdef const double* c_g = &carb_g[0] if carb_t_s.shape[0] else NULL
    cdef const double* c_a = &carb_absorption_min[0] if carb_t_s.shape[0] else NULL
    cdef double c[MAX_LAG + 1]
    cdef double act[MAX_LAG + 1]
    cdef Py_ssize_t lag, i
    if params.shape[0] < N_PARAMS or out.shape[0] < N_OUT:
        raise ValueError("params or out too short")
    if (cgm_mg_dl.shape[0] != cgm_t_s.shape[0] or dose_kind.shape[0] != dose_t_s.shape[0]
            or dose_amount.shape[0] != dose_t_s.shape[0]
            or dose_duration_min.shape[0] != dose_t_s.shape[0]
            or carb_g.shape[0] != carb_t_s.shape[0]
            or carb_absorption_min.shape[0] != carb_t_s.shape[0]
            or basal_rate_u_per_h.shape[0] != basal_start_min.shape[0]
            or basal_start_min.shape[0] == 0):
        raise ValueError("packed arrays of mismatched length")
    with nogil:
        msg = _check(&params[0], cgm_t, cgm_v, cgm_t_s.shape[0], d_t, d_k, d_a, d_d,
                     dose_t_s.shape[0], c_t, c_g, c_a, carb_t_s.shape[0], &basal_start_min[0],
                     &basal_rate_u_per_h[0], basal_start_min.shape[0])
    if msg != NULL:
        raise ValueError(msg.decode("utf-8"))
    if (_tab_lag < 0 or _tab_key[0] != params[P_IMODEL] or _tab_key[1] != params[P_TD]
            or _tab_key[2] != params[P_TP] or _tab_key[3] != params[P_DELAY]):
        _tab_lag = curve_table(_tab_c, _tab_a, <int>params[P_IMODEL], params[P_TD], params[P_TP],
                               params[P_DELAY])
        _tab_key[0] = params[P_IMODEL]
        _tab_key[1] = params[P_TD]
        _tab_key[2] = params[P_TP]
        _tab_key[3] = params[P_DELAY]
    lag = _tab_lag
    for i in range(lag + 1):
        c[i] = _tab_c[i]
        act[i] = _tab_a[i]
    with nogil:
        rc = _decide(&params[0], cgm_t, cgm_v, cgm_t_s.shape[0], d_t, d_k, d_a, d_d,
                     dose_t_s.shape[0], c_t, c_g, c_a, carb_t_s.shape[0], &basal_start_min[0],
                     &basal_rate_u_per_h[0], basal_start_min.shape[0], c, act, lag, &out[0])
    return rc
