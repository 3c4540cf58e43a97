"""Carb absorption models (linear, Loop-style piecewise parabolic) and carbs on board.

These give absorption as entered. The decision kernel additionally infers the observed
absorption from glucose (deviation between observed change and insulin effect), never slower
than the minimum rate that finishes every entry within 1.5 × its absorption time.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt

from kernels import _carbs

__all__ = ["CARB_DELAY_MIN", "CarbModel", "carbs_on_board"]

F64 = npt.NDArray[np.float64]
CARB_DELAY_MIN = 10.0


class CarbModel(IntEnum):
    LINEAR = 0
    PARABOLIC = 1


def carbs_on_board(
    times_s: npt.ArrayLike,
    carb_t_s: npt.ArrayLike,
    carb_g: npt.ArrayLike,
    carb_absorption_min: npt.ArrayLike,
    *,
    model: CarbModel = CarbModel.PARABOLIC,
    delay_min: float = CARB_DELAY_MIN,
) -> tuple[F64, F64]:
    """Carbs on board and carbs absorbed (g) at each time, from the entered meals."""
    arrs = [np.ascontiguousarray(a, dtype=np.float64) for a in (times_s, carb_t_s, carb_g)]
    absorb = np.ascontiguousarray(carb_absorption_min, dtype=np.float64)
    times, ct, cg = arrs
    if not (ct.size == cg.size == absorb.size):
        raise ValueError("carb arrays must have the same length")
    if any(not np.all(np.isfinite(a)) for a in (times, ct, cg, absorb)):
        raise ValueError("carb inputs must be finite")
    if np.any(cg < 0) or np.any(cg > 250) or np.any(absorb < 30) or np.any(absorb > 480):
        raise ValueError("carbs must be 0–250 g with absorption 30–480 min")
    cob = np.empty_like(times)
    absorbed = np.empty_like(times)
    _carbs.carbs_on_board(times, ct, cg, absorb, int(model), float(delay_min), cob, absorbed)
    return cob, absorbed
