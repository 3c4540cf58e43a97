# Shared nogil maths for the dosing kernels: inline helpers compiled into every module that
# cimports them (no cross-module calls on the hot path). kernels/reference/core.py mirrors each
# helper line by line; the differential tests hold the two together.
from libc.math cimport exp

cdef enum:
    STEP_MIN = 5
    N_FUTURE = 72          # 6 h at 5-min steps (73 points including now)
    HIST_STEPS = 96        # 8 h of history analysed for deviations and sensitivity
    MAX_LAG = 120          # duration + delay up to 600 min
    MAX_CARBS = 64
    MAX_DEVS = 1024

cdef inline double ffloor(double x) noexcept nogil:
    """⌊x⌋ by truncation (exactly libm floor for |x| < 2⁶³, without the call)."""
    cdef long long i = <long long>x
    if <double>i > x:
        i -= 1
    return <double>i


cdef inline double clamp(double x, double lo, double hi) noexcept nogil:
    """min(max(x, lo), hi)."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


cdef inline double exp_iob(double t, double td, double tp) noexcept nogil:
    """Loop/oref0 exponential model: 1 - S(1-a)((t²/(τ·td·(1-a)) - t/τ - 1)e^(-t/τ) + 1)."""
    cdef double tau, a, s
    if t <= 0.0:
        return 1.0
    if t >= td:
        return 0.0
    tau = tp * (1.0 - tp / td) / (1.0 - 2.0 * tp / td)
    a = 2.0 * tau / td
    s = 1.0 / (1.0 - a + (1.0 + a) * exp(-td / tau))
    return 1.0 - s * (1.0 - a) * ((t * t / (tau * td * (1.0 - a)) - t / tau - 1.0) * exp(-t / tau) + 1.0)


cdef inline double exp_activity(double t, double td, double tp) noexcept nogil:
    """Exponential activity (fraction per min): S/τ² · t · (1 - t/td) · e^(-t/τ)."""
    cdef double tau, a, s
    if t <= 0.0 or t >= td:
        return 0.0
    tau = tp * (1.0 - tp / td) / (1.0 - 2.0 * tp / td)
    a = 2.0 * tau / td
    s = 1.0 / (1.0 - a + (1.0 + a) * exp(-td / tau))
    return s / (tau * tau) * t * (1.0 - t / td) * exp(-t / tau)


cdef inline double bilinear_iob(double t, double td, double tp) noexcept nogil:
    """Triangular activity of height 2/td peaking at tp: IOB = 1 - ∫₀ᵗ activity."""
    cdef double h = 2.0 / td
    if t <= 0.0:
        return 1.0
    if t >= td:
        return 0.0
    if t <= tp:
        return 1.0 - h * t * t / (2.0 * tp)
    return h * (td - t) * (td - t) / (2.0 * (td - tp))


cdef inline double bilinear_activity(double t, double td, double tp) noexcept nogil:
    """Triangular activity: h·t/tp rising, h·(td-t)/(td-tp) falling, h = 2/td."""
    cdef double h = 2.0 / td
    if t <= 0.0 or t >= td:
        return 0.0
    if t <= tp:
        return h * t / tp
    return h * (td - t) / (td - tp)


cdef inline double iob_fraction(double age, int model, double td, double tp, double delay) noexcept nogil:
    """Fraction of a dose still on board `age` minutes after delivery (after `delay`)."""
    if model == 1:
        return bilinear_iob(age - delay, td, tp)
    return exp_iob(age - delay, td, tp)


cdef inline double activity_fraction(double age, int model, double td, double tp, double delay) noexcept nogil:
    """Fraction of a dose acting per minute `age` minutes after delivery."""
    if model == 1:
        return bilinear_activity(age - delay, td, tp)
    return exp_activity(age - delay, td, tp)


cdef inline double carb_fraction(double elapsed, double absorption_min, int model) noexcept nogil:
    """Absorbed fraction: linear x, or Loop's parabola 2x² (x<½), -1+4x-2x² (x<1); x = t/T."""
    cdef double x
    if elapsed <= 0.0:
        return 0.0
    x = elapsed / absorption_min
    if x >= 1.0:
        return 1.0
    if model == 1:
        if x < 0.5:
            return 2.0 * x * x
        return -1.0 + 4.0 * x - 2.0 * x * x
    return x


cdef inline double scheduled_basal(double minute_of_day, const double* start_min,
                                   const double* rate, Py_ssize_t n) noexcept nogil:
    """Scheduled rate (U/h) of the last segment whose start ≤ minute_of_day (schedule sorted)."""
    cdef Py_ssize_t i
    cdef double r = rate[n - 1]
    if n == 1:
        return r
    for i in range(n):
        if start_min[i] <= minute_of_day:
            r = rate[i]
        else:
            break
    return r


cdef inline double minute_of_day(double rel_min, double now_s, double utc_offset_min) noexcept nogil:
    """Local minute of day of a time `rel_min` minutes from now."""
    cdef double m = now_s / 60.0 + utc_offset_min + rel_min
    return m - ffloor(m / 1440.0) * 1440.0


cdef inline void deposit(double* bins, Py_ssize_t origin, Py_ssize_t n_bins, double rel_min,
                         double units) noexcept nogil:
    """Split a pulse at rel_min linearly between its two neighbouring 5-min grid points."""
    cdef double p, f
    cdef Py_ssize_t k0
    if rel_min > 0.0:
        rel_min = 0.0  # a dose stamped in the future counts as delivered now (conservative)
    p = rel_min / STEP_MIN
    k0 = <Py_ssize_t>ffloor(p)
    f = p - k0
    if k0 + origin >= 0:
        bins[k0 + origin] += units * (1.0 - f)
    if k0 + 1 + origin >= 0 and k0 + 1 + origin < n_bins and f > 0.0:
        bins[k0 + 1 + origin] += units * f


cdef inline int deposit_doses(double* bins, Py_ssize_t origin, Py_ssize_t n_bins,
                              double now_s, double utc_offset_min, double horizon_min,
                              const double* t_s, const double* kind, const double* amount,
                              const double* duration_min, Py_ssize_t n_doses,
                              const double* sched_start, const double* sched_rate,
                              Py_ssize_t n_sched) noexcept nogil:
    """Net insulin pulses on the grid: boluses whole, extended parts and temps (rate - scheduled)
    in ≤ 5-min pulses at their midpoints; a temp ends at the next temp. Returns pulses deposited."""
    cdef Py_ssize_t i, j, n_pulses
    cdef double start, end, length, mid, rate, u
    cdef int count = 0
    for i in range(n_doses):
        start = (t_s[i] - now_s) / 60.0
        if kind[i] == 0.0:
            if duration_min[i] <= 0.0:
                if start >= -horizon_min:
                    deposit(bins, origin, n_bins, start, amount[i])
                    count += 1
                continue
            end = start + duration_min[i]
            rate = amount[i] / duration_min[i]  # U per min, absolute (boluses are not basal)
        else:
            end = start + duration_min[i]
            for j in range(i + 1, n_doses):
                if kind[j] != 0.0:
                    if (t_s[j] - now_s) / 60.0 < end:
                        end = (t_s[j] - now_s) / 60.0
                    break
            rate = -1.0
        if end > 0.0:
            end = 0.0
        if start < -horizon_min:
            start = -horizon_min
        if end <= start:
            continue
        n_pulses = <Py_ssize_t>((end - start) / STEP_MIN)
        if start + n_pulses * STEP_MIN < end:
            n_pulses += 1
        length = (end - start) / n_pulses
        for j in range(n_pulses):
            mid = start + (j + 0.5) * length
            if kind[i] == 0.0:
                u = rate * length
            else:
                u = (amount[i] - scheduled_basal(minute_of_day(mid, now_s, utc_offset_min),
                                                 sched_start, sched_rate, n_sched)) * length / 60.0
            deposit(bins, origin, n_bins, mid, u)
            count += 1
    return count


cdef inline Py_ssize_t curve_table(double* c, double* act, int model, double td, double tp,
                                   double delay) noexcept nogil:
    """IOB and activity fractions at ages 0, 5, … 5·L with L = ⌈(td + delay)/5⌉; returns L."""
    cdef Py_ssize_t lag = <Py_ssize_t>((td + delay) / STEP_MIN)
    cdef Py_ssize_t l
    if lag * STEP_MIN < td + delay:
        lag += 1
    for l in range(lag + 1):
        c[l] = iob_fraction(l * STEP_MIN, model, td, tp, delay)
        act[l] = activity_fraction(l * STEP_MIN, model, td, tp, delay)
    return lag


cdef extern from *:
    """
    /* The scatter form of the insulin convolution is the one hot loop of a decision; restrict
       plus per-function vectorisation (with an AVX2 clone picked at load time) make it ~3x
       faster than the -O2 scalar loop. Same operations per element as the reference. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    __attribute__((target_clones("avx2", "default"), optimize("O3")))
    #endif
    static void langerhans_convolve(const double *restrict bins, Py_ssize_t n_bins,
                                    const double *restrict c, Py_ssize_t lag,
                                    double *restrict out) {
        Py_ssize_t j, l, stop;
        for (j = 0; j < n_bins; j++) out[j] = 0.0;
        for (j = 0; j < n_bins; j++) {
            double b = bins[j];
            if (b == 0.0) continue;
            stop = lag + 1;
            if (j + stop > n_bins) stop = n_bins - j;
            double *restrict o = out + j;
            for (l = 0; l < stop; l++) o[l] += b * c[l];
        }
    }
    """
    void langerhans_convolve(const double* bins, Py_ssize_t n_bins, const double* c,
                             Py_ssize_t lag, double* out) noexcept nogil


cdef inline void convolve_scalar(const double* bins, Py_ssize_t n_bins, const double* c, Py_ssize_t lag,
                          double* out) noexcept nogil:
    """out[k] = Σ_{j ≤ k, k-j ≤ L} bins[j]·c[k-j]  (scatter form; the C twin above is used)."""
    cdef Py_ssize_t j, l, stop
    cdef double b
    for j in range(n_bins):
        out[j] = 0.0
    for j in range(n_bins):
        b = bins[j]
        if b == 0.0:
            continue
        stop = lag + 1
        if j + stop > n_bins:
            stop = n_bins - j
        for l in range(stop):
            out[j + l] += b * c[l]


cdef inline void convolve(const double* bins, Py_ssize_t n_bins, const double* c, Py_ssize_t lag,
                          double* out) noexcept nogil:
    """out[k] = Σ_{j ≤ k, k-j ≤ L} bins[j]·c[k-j] (vectorised C helper)."""
    langerhans_convolve(bins, n_bins, c, lag, out)
