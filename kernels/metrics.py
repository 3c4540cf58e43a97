"""Consensus CGM metrics for reports: TIR 70–180, TBR < 70 / < 54, TAR > 180 / > 250, mean,
SD, CV, GMI (3.31 + 0.02392 × mean), Kovatchev LBGI / HBGI and coverage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kernels import _metrics

__all__ = ["GlucoseMetrics", "glucose_metrics"]


@dataclass(frozen=True, slots=True)
class GlucoseMetrics:
    n: int
    mean_mg_dl: float
    sd_mg_dl: float
    cv_pct: float
    gmi_pct: float
    tir_pct: float
    tbr70_pct: float
    tbr54_pct: float
    tar180_pct: float
    tar250_pct: float
    lbgi: float
    hbgi: float
    coverage_pct: float


def glucose_metrics(mg_dl: npt.ArrayLike, period_min: float | None = None) -> GlucoseMetrics:
    """Metrics of readings (mg/dL, 39–401); coverage against one reading per 5 min of period."""
    v = np.ascontiguousarray(mg_dl, dtype=np.float64)
    if v.ndim != 1 or not np.all(np.isfinite(v)) or np.any(v < 39) or np.any(v > 401):
        raise ValueError("readings must be finite mg/dL values within 39–401")
    expected = (period_min / 5.0) if period_min else 0.0
    out = np.zeros(13)
    _metrics.glucose_metrics(v, expected, out)
    return GlucoseMetrics(int(out[0]), *(float(x) for x in out[1:]))
