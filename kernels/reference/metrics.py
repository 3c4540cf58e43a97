"""Reference twin of kernels/_metrics.pyx (NumPy)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["glucose_metrics_reference"]


def glucose_metrics_reference(
    mg_dl: npt.NDArray[np.float64], expected_count: float, out: npt.NDArray[np.float64]
) -> None:
    """Same contract as kernels._metrics.glucose_metrics."""
    out[:] = 0.0
    n = mg_dl.size
    if n == 0:
        return
    v = mg_dl
    mean = float(v.sum() / n)
    sd = float(np.sqrt(((v - mean) ** 2).sum() / (n - 1))) if n > 1 else 0.0
    f = 1.509 * (np.log(v) ** 1.084 - 5.381)
    r = 10.0 * f * f
    coverage = 100.0 * (min(n / expected_count, 1.0)) if expected_count > 0 else 100.0
    out[:] = [
        n,
        mean,
        sd,
        100.0 * sd / mean,
        3.31 + 0.02392 * mean,
        100.0 * np.count_nonzero((v >= 70.0) & (v <= 180.0)) / n,
        100.0 * np.count_nonzero(v < 70.0) / n,
        100.0 * np.count_nonzero(v < 54.0) / n,
        100.0 * np.count_nonzero(v > 180.0) / n,
        100.0 * np.count_nonzero(v > 250.0) / n,
        float(r[f < 0.0].sum() / n),
        float(r[f >= 0.0].sum() / n),
        coverage,
    ]
