# Per-reading CGM assessment (trend, noise, faults, quality, compression episode) over one
# sensor's time-sorted series. Twin: services/cgm_ingestion/assessment.py (the reference);
# every branch and every floating-point operation follows it in the same order, so results
# are identical, not merely close (tests/kernels/test_cgm_assess.py).
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport fabs, isfinite, pow, sqrt

# Fault bits (the wrapper maps them to frozensets of Fault).
cdef enum:
    JUMP = 1
    FLAT_SIGNAL = 2
    NOISY = 4
    WARM_UP = 8
    COMPRESSION_LOW = 16

# Trend codes, in the order of the wrapper's table.
cdef enum:
    DOUBLE_UP = 0
    SINGLE_UP = 1
    FORTY_FIVE_UP = 2
    FLAT = 3
    FORTY_FIVE_DOWN = 4
    SINGLE_DOWN = 5
    DOUBLE_DOWN = 6
    NOT_COMPUTABLE = 7
    RATE_OUT_OF_RANGE = 8

cdef double TREND_WINDOW_S = 15 * 60
cdef double NOISE_WINDOW_S = 30 * 60
cdef double CONSECUTIVE_MAX_S = 7.5 * 60
cdef double GAP_THRESHOLD_S = 15 * 60
cdef double JUMP_RATE = 4.0
cdef double MAX_TREND_RATE = 10.0
cdef double FLAT_MIN_DURATION_S = 45 * 60
cdef double WARM_UP_S = 2 * 3600
cdef double COMPRESSION_MIN_DROP = 25.0
cdef double COMPRESSION_MIN_RATE = 2.0
cdef double COMPRESSION_RECOVERY = 15.0
cdef double COMPRESSION_LOOKBACK_S = 90 * 60
cdef int NOISY_LEVEL = 3


cdef class _Series:
    """The series copied into C arrays (checked: equal lengths, finite numbers)."""

    cdef double* t
    cdef double* g
    cdef Py_ssize_t n

    def __cinit__(self, list times, list values):
        cdef Py_ssize_t i, n = len(times)
        if len(values) != n:
            raise ValueError("times and values differ in length")
        self.n = n
        self.t = <double*>PyMem_Malloc((n + 1) * sizeof(double))
        self.g = <double*>PyMem_Malloc((n + 1) * sizeof(double))
        if self.t == NULL or self.g == NULL:
            raise MemoryError()
        for i in range(n):
            self.t[i] = <double>times[i]
            self.g[i] = <double>values[i]
            if not (isfinite(self.t[i]) and isfinite(self.g[i])):
                raise ValueError("times and values must be finite")

    def __dealloc__(self):
        PyMem_Free(self.t)
        PyMem_Free(self.g)


cdef inline Py_ssize_t _window_start(const double* t, Py_ssize_t index, double span_s) noexcept:
    """First index of the window (t_index - span_s, t_index] walking back from index."""
    cdef double limit = t[index] - span_s
    cdef Py_ssize_t start = index
    while start >= 0 and t[start] > limit:
        start -= 1
    return start + 1


cdef int _rate(const double* t, const double* g, Py_ssize_t index, double* rate) except -1:
    """1 and the slope in *rate, or 0 when not computable."""
    cdef Py_ssize_t lo = _window_start(t, index, TREND_WINDOW_S), i
    cdef Py_ssize_t n = index - lo + 1
    cdef double mean_t = 0.0, mean_g = 0.0, sxx = 0.0, sxy = 0.0
    if n < 3 or t[index] - t[lo] < 9 * 60:
        return 0
    for i in range(lo, index + 1):
        mean_t += t[i]
    mean_t = mean_t / n
    for i in range(lo, index + 1):
        mean_g += g[i]
    mean_g = mean_g / n
    for i in range(lo, index + 1):
        sxx += pow(t[i] - mean_t, 2.0)
    for i in range(lo, index + 1):
        sxy += (t[i] - mean_t) * (g[i] - mean_g)
    if sxx == 0.0:
        raise ZeroDivisionError("float division by zero")
    rate[0] = sxy / sxx * 60.0
    return 1


cdef int _arrow(bint has_rate, double rate) noexcept:
    if not has_rate or not isfinite(rate):
        return NOT_COMPUTABLE
    if fabs(rate) > MAX_TREND_RATE:
        return RATE_OUT_OF_RANGE
    if rate >= 3:
        return DOUBLE_UP
    if rate >= 2:
        return SINGLE_UP
    if rate >= 1:
        return FORTY_FIVE_UP
    if rate > -1:
        return FLAT
    if rate > -2:
        return FORTY_FIVE_DOWN
    if rate > -3:
        return SINGLE_DOWN
    return DOUBLE_DOWN


cdef int _noise(const double* t, const double* g, Py_ssize_t index) noexcept:
    cdef Py_ssize_t lo = _window_start(t, index, NOISE_WINDOW_S), i
    cdef Py_ssize_t count = 0
    cdef double d, total = 0.0, sigma
    if index - lo + 1 < 4:
        return 0
    for i in range(lo + 2, index + 1):
        if t[i - 1] - t[i - 2] > CONSECUTIVE_MAX_S or t[i] - t[i - 1] > CONSECUTIVE_MAX_S:
            continue
        d = g[i] - 2 * g[i - 1] + g[i - 2]
        total += d * d
        count += 1
    if count < 2:
        return 0
    sigma = sqrt(total / count) / sqrt(6.0)
    if sigma < 2.5:
        return 0
    if sigma < 5.0:
        return 1
    if sigma < 8.0:
        return 2
    if sigma < 12.0:
        return 3
    return 4


cdef bint _jump(const double* t, const double* g, Py_ssize_t index) noexcept:
    cdef double dt_min, delta, denominator
    if index == 0:
        return False
    dt_min = (t[index] - t[index - 1]) / 60.0
    if dt_min <= 0 or dt_min * 60 > GAP_THRESHOLD_S:
        return False
    delta = fabs(g[index] - g[index - 1])
    denominator = 1.0 if 1.0 > dt_min else dt_min
    return delta > 10 and delta / denominator > JUMP_RATE


cdef bint _flat(const double* t, const double* g, Py_ssize_t index) noexcept:
    cdef double value = g[index]
    cdef Py_ssize_t start = index
    while start > 0:
        if g[start - 1] != value or t[start] - t[start - 1] > GAP_THRESHOLD_S:
            break
        start -= 1
    return t[index] - t[start] >= FLAT_MIN_DURATION_S


cdef int _compression_dropping(const double* t, const double* g, Py_ssize_t index) except -1:
    cdef Py_ssize_t lo = _window_start(t, index, 45 * 60), i, top = -1
    cdef double cut = t[index] - 15 * 60, hi = 0.0, low = 0.0, level, drop, minutes
    cdef Py_ssize_t n_earlier = 0, n_recent = 0
    if index - lo + 1 < 5:
        return 0
    for i in range(lo, index + 1):
        if t[i] >= cut:
            n_recent += 1
        if t[i] < cut:
            if n_earlier == 0 or g[i] > hi:
                hi = g[i]
            if n_earlier == 0 or g[i] < low:
                low = g[i]
            n_earlier += 1
    if n_earlier < 3 or n_recent == 0:
        return 0
    level = hi - 5
    for i in range(index - 1, lo - 1, -1):
        if g[i] >= level:
            top = i
            break
    if top < 0:
        raise IndexError("list index out of range")
    drop = g[top] - g[index]
    minutes = (t[index] - t[top]) / 60.0
    if not (hi - low <= 15 and drop >= COMPRESSION_MIN_DROP):
        return 0
    if minutes == 0.0:
        raise ZeroDivisionError("float division by zero")
    return 1 if drop / minutes >= 3.0 else 0


cdef int _faults(
    const double* t,
    const double* g,
    Py_ssize_t index,
    int noise,
    bint has_started,
    double started_s,
    bint night,
) except -1:
    cdef int faults = 0
    cdef double since
    if _jump(t, g, index):
        faults |= JUMP
    if _flat(t, g, index):
        faults |= FLAT_SIGNAL
    if noise >= NOISY_LEVEL:
        faults |= NOISY
    if has_started:
        since = t[index] - started_s
        if 0 <= since < WARM_UP_S:
            faults |= WARM_UP
    if night and _compression_dropping(t, g, index):
        faults |= COMPRESSION_LOW
    return faults


cdef inline void _check_index(_Series series, Py_ssize_t index) except *:
    if index < 0 or index >= series.n:
        raise IndexError("index outside the series")


def assess(
    _Series series not None,
    Py_ssize_t index,
    bint has_started,
    double sensor_started_s,
    bint night,
    bint out_of_sensor_range,
):
    """(rate or None, trend code, noise level, fault bits, quality) of series[index]."""
    _check_index(series, index)
    cdef double rate = 0.0
    cdef int has_rate = _rate(series.t, series.g, index, &rate)
    cdef int noise = _noise(series.t, series.g, index)
    cdef int faults = _faults(
        series.t, series.g, index, noise, has_started, sensor_started_s, night
    )
    cdef int trend = _arrow(has_rate, rate)
    cdef int score
    if noise >= 4 and trend != RATE_OUT_OF_RANGE:
        trend = NOT_COMPUTABLE
    score = 100 - 12 * noise
    if faults & JUMP:
        score -= 30
    if faults & FLAT_SIGNAL:
        score -= 45
    if faults & COMPRESSION_LOW:
        score -= 40
    if faults & WARM_UP:
        score -= 30
    if trend == NOT_COMPUTABLE or trend == RATE_OUT_OF_RANGE:
        score -= 10
    if out_of_sensor_range:
        score -= 10
    score = 0 if score < 0 else (100 if score > 100 else score)
    return (rate if has_rate else None), trend, noise, faults, score


def faults_at(_Series series not None, Py_ssize_t index, bint night):
    """Fault bits of series[index] without a sensor start (a reading's predecessor)."""
    _check_index(series, index)
    cdef int noise = _noise(series.t, series.g, index)
    return _faults(series.t, series.g, index, noise, False, 0.0, night)


def compression_episode(_Series series not None, Py_ssize_t index):
    """None or (start_s, trough_s, end_s, baseline_mg_dl, trough_mg_dl)."""
    _check_index(series, index)
    cdef const double* t = series.t
    cdef const double* g = series.g
    cdef Py_ssize_t lo = _window_start(t, index, COMPRESSION_LOOKBACK_S)
    cdef Py_ssize_t n = index - lo + 1, i, j, trough_i, start_i, count = 0
    cdef double drop, drop_min, baseline, hi, low, v
    cdef double* before
    if n < 5:
        return None
    trough_i = lo
    for i in range(lo + 1, index):
        if g[i] < g[trough_i]:
            trough_i = i
    start_i = trough_i
    while start_i > lo and g[start_i - 1] >= g[start_i]:
        start_i -= 1
    if start_i - lo < 2:
        return None
    before = <double*>PyMem_Malloc((start_i - lo + 1) * sizeof(double))
    if before == NULL:
        raise MemoryError()
    try:
        for i in range(lo, start_i + 1):
            if t[i] >= t[start_i] - 20 * 60:
                # Insertion sort: the reference takes the upper median of sorted values.
                v = g[i]
                j = count
                while j > 0 and before[j - 1] > v:
                    before[j] = before[j - 1]
                    j -= 1
                before[j] = v
                count += 1
        low = before[0]
        hi = before[count - 1]
        if hi - low > COMPRESSION_RECOVERY:
            return None
        baseline = before[count // 2]
    finally:
        PyMem_Free(before)
    drop = g[start_i] - g[trough_i]
    drop_min = (t[trough_i] - t[start_i]) / 60.0
    if drop < COMPRESSION_MIN_DROP or drop_min <= 0:
        return None
    if drop / drop_min < COMPRESSION_MIN_RATE:
        return None
    if fabs(g[index] - baseline) > COMPRESSION_RECOVERY:
        return None
    if fabs(g[index - 1] - baseline) <= COMPRESSION_RECOVERY:
        return None
    return (t[start_i], t[trough_i], t[index], baseline, g[trough_i])
