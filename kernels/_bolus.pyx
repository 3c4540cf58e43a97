# Bolus calculator on packed scalars. Twin: kernels/reference/bolus.py.
from libc.math cimport ceil, floor

cdef enum:
    W_LOW_GLUCOSE = 1 << 0
    W_FALLING = 1 << 1
    W_CAPPED = 1 << 2
    W_SUGGEST_CARBS = 1 << 3
    W_IOB_COVERS = 1 << 4


cdef inline double floor_to(double x, double inc) noexcept nogil:
    """⌊x/inc⌋·inc (never round a dose up)."""
    if inc <= 0.0:
        return x
    return floor(x / inc + 1e-9) * inc


def bolus_calc(const double[::1] p, double[::1] out):
    """bolus = ⌊carbs/CR + (BG - target)/ISF + min(trend, 0)·30/ISF - max(IOB, 0)⌋ (≥ 0, ≤ max).

    p = [carbs_g, bg, target, isf, cr, iob_u, trend_per_min, increment, max_bolus, immediate_pct]
    out = [total, immediate, extended, carb_u, correction_u, iob_u, trend_u, carbs_g_suggested,
           warnings, raw_u]
    """
    cdef double carb_u, corr, trend_u, iob_u, raw, total, imm, ext, sugg = 0.0
    cdef long long warn = 0
    carb_u = p[0] / p[4]
    corr = (p[1] - p[2]) / p[3]
    if p[1] < 70.0:
        warn |= W_LOW_GLUCOSE
        if corr > 0.0:
            corr = 0.0
    trend_u = 0.0
    if p[6] < 0.0:
        trend_u = p[6] * 30.0 / p[3]
        warn |= W_FALLING
    iob_u = p[5] if p[5] > 0.0 else 0.0
    raw = carb_u + corr + trend_u - iob_u
    total = raw if raw > 0.0 else 0.0
    if raw <= 0.0 and carb_u + corr + trend_u > 0.0:
        warn |= W_IOB_COVERS
    if raw < 0.0:
        sugg = ceil(-raw * p[4])
    if p[1] < 70.0 and sugg < 15.0:
        sugg = 15.0
    if sugg > 0.0:
        warn |= W_SUGGEST_CARBS
    if total > p[8]:
        total = p[8]
        warn |= W_CAPPED
    total = floor_to(total, p[7])
    imm = floor_to(total * p[9] / 100.0, p[7])
    ext = floor_to(total - imm, p[7])
    out[0] = imm + ext
    out[1] = imm
    out[2] = ext
    out[3] = carb_u
    out[4] = corr
    out[5] = iob_u
    out[6] = trend_u
    out[7] = sugg
    out[8] = <double>warn
    out[9] = raw
