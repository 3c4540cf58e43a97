# Carb absorption models and carbs on board (as entered, before glucose-driven adjustment).
# Twin: kernels/reference/carbs.py. The observed (dynamic) absorption lives in _decide.pyx.
from kernels._core cimport carb_fraction


def carbs_on_board(const double[::1] times_s, const double[::1] carb_t_s,
                   const double[::1] carb_g, const double[::1] carb_absorption_min, int model,
                   double delay_min, double[::1] cob_out, double[::1] absorbed_out):
    """COB(t) = Σ_{t_i ≤ t} g_i·(1 - F((t - t_i - delay)/T_i)); absorbed(t) = Σ g_i·F(…)."""
    cdef Py_ssize_t k, i, n = times_s.shape[0], m = carb_t_s.shape[0]
    cdef double cob, absorbed, f
    with nogil:
        for k in range(n):
            cob = 0.0
            absorbed = 0.0
            for i in range(m):
                if carb_t_s[i] > times_s[k]:
                    continue
                f = carb_fraction((times_s[k] - carb_t_s[i]) / 60.0 - delay_min,
                                  carb_absorption_min[i], model)
                cob += carb_g[i] * (1.0 - f)
                absorbed += carb_g[i] * f
            cob_out[k] = cob
            absorbed_out[k] = absorbed
