# Insulin action kernels: model curves and net IOB / activity on the 5-min grid from a dose
# history. Twin: kernels/reference/insulin.py.
import numpy as np
from kernels._core cimport (
    STEP_MIN, N_FUTURE, MAX_LAG, activity_fraction, convolve, curve_table, deposit_doses,
    iob_fraction,
)


def insulin_curve(const double[::1] ages_min, int model, double duration_min, double peak_min,
                  double delay_min, double[::1] iob_out, double[::1] activity_out):
    """Per-unit curves at each age: IOB fraction f(age) and activity -df/dt (per min)."""
    cdef Py_ssize_t i, n = ages_min.shape[0]
    with nogil:
        for i in range(n):
            iob_out[i] = iob_fraction(ages_min[i], model, duration_min, peak_min, delay_min)
            activity_out[i] = activity_fraction(ages_min[i], model, duration_min, peak_min,
                                                delay_min)


def insulin_grid(double now_s, double utc_offset_min, Py_ssize_t n_past,
                 const double[::1] dose_t_s, const double[::1] dose_kind,
                 const double[::1] dose_amount, const double[::1] dose_duration_min,
                 const double[::1] basal_start_min, const double[::1] basal_rate_u_per_h,
                 int model, double duration_min, double peak_min, double delay_min,
                 double[::1] iob_out, double[::1] activity_out):
    """Net IOB(t_k) = Σ_j u_j·f(t_k - t_j) and activity at t_k = now + 5k, k = -n_past … 72."""
    cdef double c[MAX_LAG + 1]
    cdef double act[MAX_LAG + 1]
    cdef Py_ssize_t lag = curve_table(c, act, model, duration_min, peak_min, delay_min)
    cdef Py_ssize_t origin = n_past + lag + 1
    cdef Py_ssize_t n_bins = origin + N_FUTURE + 1
    cdef Py_ssize_t i, n_doses = dose_t_s.shape[0]
    cdef double[::1] bins = np.zeros(n_bins)
    cdef double[::1] iob = np.zeros(n_bins)
    cdef double[::1] actv = np.zeros(n_bins)
    with nogil:
        deposit_doses(&bins[0], origin, n_bins, now_s, utc_offset_min, origin * STEP_MIN,
                      &dose_t_s[0] if n_doses else NULL, &dose_kind[0] if n_doses else NULL,
                      &dose_amount[0] if n_doses else NULL,
                      &dose_duration_min[0] if n_doses else NULL, n_doses,
                      &basal_start_min[0], &basal_rate_u_per_h[0], basal_start_min.shape[0])
        convolve(&bins[0], n_bins, c, lag, &iob[0])
        convolve(&bins[0], n_bins, act, lag, &actv[0])
        for i in range(n_past + N_FUTURE + 1):
            iob_out[i] = iob[origin - n_past + i]
            activity_out[i] = actv[origin - n_past + i]
