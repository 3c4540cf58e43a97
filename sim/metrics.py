"""Outcome metrics (2019 international consensus on time in range), from true blood glucose.

Input is glucose sampled every 5 minutes in mg/dL. Percentages are of time; CV is SD / mean;
GMI = 3.31 + 0.02392 × mean (%); LBGI / HBGI after Kovatchev (symmetrised risk
f = 1.509 (ln(G)^1.084 − 5.381), r = 10 f²); a severe (level 2) hypo event is ≥ 15 min below
54 mg/dL, ending after ≥ 15 min at or above 54.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Outcomes", "mean_outcomes", "outcomes", "severe_hypo_events"]

SAMPLE_MIN = 5
EVENT_SAMPLES = 15 // SAMPLE_MIN


@dataclass(frozen=True, slots=True)
class Outcomes:
    tir_pct: float
    tbr70_pct: float
    tbr54_pct: float
    tar180_pct: float
    tar250_pct: float
    mean_mg_dl: float
    cv_pct: float
    gmi_pct: float
    lbgi: float
    hbgi: float
    severe_events: int
    days: float
    total_daily_insulin_u: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def severe_hypo_events(glucose_mg_dl: npt.NDArray[np.float64]) -> int:
    """Episodes of ≥ 15 min below 54; dips separated by < 15 min above 54 are one episode."""
    below = np.asarray(glucose_mg_dl) < 54.0
    events = 0
    run = 0  # consecutive samples below
    recovered = EVENT_SAMPLES  # consecutive samples at/above since the last counted event
    in_event = False
    for b in below:
        if b:
            run += 1
            recovered = 0
            if not in_event and run >= EVENT_SAMPLES:
                events += 1
                in_event = True
        else:
            run = 0
            recovered += 1
            if recovered >= EVENT_SAMPLES:
                in_event = False
    return events


def outcomes(glucose_mg_dl: npt.ArrayLike, insulin_u: float = 0.0) -> Outcomes:
    """Consensus metrics of one glucose trace (5-min samples) and the insulin given over it."""
    g = np.asarray(glucose_mg_dl, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError("glucose must be a non-empty 1-D trace")
    if not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ValueError("glucose must be finite and positive")
    n = g.size
    mean = float(g.mean())
    f = 1.509 * (np.log(g) ** 1.084 - 5.381)
    r = 10.0 * f * f
    days = n * SAMPLE_MIN / 1440
    return Outcomes(
        tir_pct=100.0 * float(np.count_nonzero((g >= 70) & (g <= 180))) / n,
        tbr70_pct=100.0 * float(np.count_nonzero(g < 70)) / n,
        tbr54_pct=100.0 * float(np.count_nonzero(g < 54)) / n,
        tar180_pct=100.0 * float(np.count_nonzero(g > 180)) / n,
        tar250_pct=100.0 * float(np.count_nonzero(g > 250)) / n,
        mean_mg_dl=mean,
        cv_pct=100.0 * float(g.std()) / mean,
        gmi_pct=3.31 + 0.02392 * mean,
        lbgi=float(np.where(f < 0, r, 0.0).mean()),
        hbgi=float(np.where(f > 0, r, 0.0).mean()),
        severe_events=severe_hypo_events(g),
        days=days,
        total_daily_insulin_u=insulin_u / days,
    )


def mean_outcomes(per_person: Sequence[Outcomes]) -> Outcomes:
    """A group's outcomes: each metric's mean over people, severe events summed over them."""
    fields = {k: float(np.mean([getattr(o, k) for o in per_person])) for k in Outcomes.__slots__}
    fields["severe_events"] = int(sum(o.severe_events for o in per_person))
    return Outcomes(**fields)  # type: ignore[arg-type]
