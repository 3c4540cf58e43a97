# cython: language_level=3
"""Hovorka (Cambridge) glucose–insulin model for a cohort, stepped with fixed-step RK4.

One call advances every person by one control block (typically 5 minutes): impulses
(insulin into S1, carbs into the gut compartments) are applied at the start of the block, then
the ODEs are integrated with `n_steps` classic Runge–Kutta steps of `dt_min` minutes.

State, parameter and input layouts are documented in `kernels/hovorka.py` (the public wrapper),
which also holds the NumPy reference implementation these loops must agree with.
"""

from libc.math cimport fmax

# state indices
cdef enum:
    Q1 = 0
    Q2 = 1
    S1 = 2
    S2 = 3
    PI = 4
    X1 = 5
    X2 = 6
    X3 = 7
    D1 = 8
    D2 = 9
    D1F = 10
    D2F = 11
    CI = 12
    CLR = 13
    NS = 14

# parameter indices
cdef enum:
    P_VG = 0
    P_F01 = 1
    P_K12 = 2
    P_EGP0 = 3
    P_KA1 = 4
    P_KA2 = 5
    P_KA3 = 6
    P_KB1 = 7
    P_KB2 = 8
    P_KB3 = 9
    P_KE = 10
    P_VI = 11
    P_TMAXI = 12
    P_AG = 13
    P_TMAXG = 14
    P_TMAXGF = 15
    P_TAUC = 16
    P_RENAL = 17
    P_RENAL_TH = 18

# input indices
cdef enum:
    U_INS = 0
    U_CARB = 1
    U_FAST = 2
    U_SI = 3
    U_EGP = 4
    U_EX = 5


cdef inline void _deriv(
    const double* y, const double[:, ::1] p, Py_ssize_t i,
    double si_mult, double egp_mult, double ex_uptake, double* dy,
) noexcept nogil:
    cdef double vg = p[i, P_VG]
    cdef double g = fmax(y[Q1], 0.0) / vg
    cdef double f01c = p[i, P_F01]
    cdef double exc = ex_uptake
    cdef double fr = 0.0
    cdef double tmaxi = p[i, P_TMAXI]
    cdef double tmaxg = p[i, P_TMAXG]
    cdef double tmaxgf = p[i, P_TMAXGF]
    cdef double ins = y[PI]
    if g < 4.5:
        # insulin-independent uptake falls in proportion below 4.5 mmol/L
        f01c = f01c * g / 4.5
        exc = exc * g / 4.5
    if g > p[i, P_RENAL_TH]:
        fr = p[i, P_RENAL] * (g - p[i, P_RENAL_TH]) * vg
    dy[Q1] = (
        -f01c - exc - y[X1] * y[Q1] + p[i, P_K12] * y[Q2] - fr
        + y[D2] / tmaxg + y[D2F] / tmaxgf
        + p[i, P_EGP0] * egp_mult * fmax(0.0, 1.0 - y[X3])
    )
    dy[Q2] = y[X1] * y[Q1] - (p[i, P_K12] + y[X2]) * y[Q2]
    dy[S1] = -y[S1] / tmaxi
    dy[S2] = (y[S1] - y[S2]) / tmaxi
    dy[PI] = y[S2] / tmaxi / p[i, P_VI] - p[i, P_KE] * ins
    dy[X1] = -p[i, P_KA1] * y[X1] + si_mult * p[i, P_KB1] * ins
    dy[X2] = -p[i, P_KA2] * y[X2] + si_mult * p[i, P_KB2] * ins
    dy[X3] = -p[i, P_KA3] * y[X3] + si_mult * p[i, P_KB3] * ins
    dy[D1] = -y[D1] / tmaxg
    dy[D2] = (y[D1] - y[D2]) / tmaxg
    dy[D1F] = -y[D1F] / tmaxgf
    dy[D2F] = (y[D1F] - y[D2F]) / tmaxgf
    dy[CI] = (g - y[CI]) / p[i, P_TAUC]
    dy[CLR] = p[i, P_KE] * ins * p[i, P_VI]


def step_block(
    double[:, ::1] state,
    const double[:, ::1] params,
    const double[:, ::1] inputs,
    int n_steps,
    double dt_min,
):
    """Apply the block's impulses, then RK4: y <- y + dt/6 (k1 + 2 k2 + 2 k3 + k4), n_steps times."""
    cdef Py_ssize_t n = state.shape[0]
    cdef Py_ssize_t i, j, s
    cdef double y[NS]
    cdef double tmp[NS]
    cdef double k1[NS]
    cdef double k2[NS]
    cdef double k3[NS]
    cdef double k4[NS]
    cdef double si_mult, egp_mult, ex_uptake, h = dt_min
    with nogil:
        for i in range(n):
            for j in range(NS):
                y[j] = state[i, j]
            y[S1] += inputs[i, U_INS]
            y[D1] += params[i, P_AG] * inputs[i, U_CARB]
            y[D1F] += params[i, P_AG] * inputs[i, U_FAST]
            si_mult = inputs[i, U_SI]
            egp_mult = inputs[i, U_EGP]
            ex_uptake = inputs[i, U_EX]
            for s in range(n_steps):
                _deriv(y, params, i, si_mult, egp_mult, ex_uptake, k1)
                for j in range(NS):
                    tmp[j] = y[j] + 0.5 * h * k1[j]
                _deriv(tmp, params, i, si_mult, egp_mult, ex_uptake, k2)
                for j in range(NS):
                    tmp[j] = y[j] + 0.5 * h * k2[j]
                _deriv(tmp, params, i, si_mult, egp_mult, ex_uptake, k3)
                for j in range(NS):
                    tmp[j] = y[j] + h * k3[j]
                _deriv(tmp, params, i, si_mult, egp_mult, ex_uptake, k4)
                for j in range(NS):
                    y[j] += h / 6.0 * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j])
            for j in range(NS):
                state[i, j] = y[j]
