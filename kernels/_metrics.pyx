# Consensus CGM metrics (Battelino 2019 / 2023 targets) in one pass plus a risk pass.
# Twin: kernels/reference/metrics.py.
from libc.math cimport log, pow, sqrt


def glucose_metrics(const double[::1] mg_dl, double expected_count, double[::1] out):
    """out = [n, mean, sd, cv%, gmi%, tir%, tbr70%, tbr54%, tar180%, tar250%, lbgi, hbgi, cov%]."""
    cdef Py_ssize_t i, n = mg_dl.shape[0]
    cdef double s = 0.0, ss = 0.0, mean, sd = 0.0, v, f, r, lo = 0.0, hi = 0.0
    cdef double tir = 0.0, tbr70 = 0.0, tbr54 = 0.0, tar180 = 0.0, tar250 = 0.0
    for i in range(13):
        out[i] = 0.0
    if n == 0:
        return
    with nogil:
        for i in range(n):
            s += mg_dl[i]
        mean = s / n
        for i in range(n):
            v = mg_dl[i]
            ss += (v - mean) * (v - mean)
            if v < 54.0:
                tbr54 += 1.0
            if v < 70.0:
                tbr70 += 1.0
            elif v <= 180.0:
                tir += 1.0
            else:
                tar180 += 1.0
                if v > 250.0:
                    tar250 += 1.0
            # Kovatchev risk: f = 1.509·(ln(g)^1.084 - 5.381), r = 10·f²
            f = 1.509 * (pow(log(v), 1.084) - 5.381)
            r = 10.0 * f * f
            if f < 0.0:
                lo += r
            else:
                hi += r
        if n > 1:
            sd = sqrt(ss / (n - 1))
    out[0] = n
    out[1] = mean
    out[2] = sd
    out[3] = 100.0 * sd / mean
    out[4] = 3.31 + 0.02392 * mean
    out[5] = 100.0 * tir / n
    out[6] = 100.0 * tbr70 / n
    out[7] = 100.0 * tbr54 / n
    out[8] = 100.0 * tar180 / n
    out[9] = 100.0 * tar250 / n
    out[10] = lo / n
    out[11] = hi / n
    out[12] = 100.0 * (n / expected_count if n < expected_count else 1.0) if expected_count > 0 else 100.0
