"""Simulated CGM: what a sensor reports, given the interstitial glucose the model computes.

A reading every 5 minutes is

    round(gain · C + offset + ε + compression),   limited to 40–400 mg/dL (LOW / HIGH flags)

where C is interstitial glucose (a first-order lag of blood glucose inside the model, 5–10 min),
gain and offset are drawn per sensor session (calibration error), and ε is correlated noise
shaped like Breton & Kovatchev 2008: an AR(1) Gaussian process passed through a Johnson SU
transform, so that errors come in runs and have heavier tails than a Gaussian. Compression lows
(lying on the sensor at night) dip the reading for 20–60 min; readings drop out singly and in
gaps; a new sensor gives nothing for its 2 h warm-up. Everything that does not depend on the
glucose itself is drawn up front from the seed, so a run is deterministic and per-step work is
one vector expression for the whole cohort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "CGM_HIGH_MG_DL",
    "CGM_LOW_MG_DL",
    "READING_INTERVAL_MIN",
    "CgmErrorModel",
    "CgmReading",
    "CohortCgm",
]

READING_INTERVAL_MIN: Final = 5
CGM_LOW_MG_DL: Final = 40
CGM_HIGH_MG_DL: Final = 400
WARMUP_MIN: Final = 120


@dataclass(frozen=True, slots=True)
class CgmReading:
    """One sensor reading; `flag` is LOW / HIGH when the true value is beyond the range."""

    t_min: int
    glucose_mg_dl: int
    flag: Literal["LOW", "HIGH"] | None = None


@dataclass(frozen=True, slots=True)
class CgmErrorModel:
    """Sensor error figures; the defaults are a current-generation factory-calibrated sensor."""

    gain_sd: float = 0.04
    offset_sd_mg_dl: float = 4.0
    ar_coefficient: float = 0.7  # per 5-min step, as Breton & Kovatchev
    johnson_lambda: float = 7.0  # scale (mg/dL); B&K's 15.96 was for an older sensor
    johnson_delta: float = 1.69
    johnson_gamma: float = -0.544
    dropout_prob: float = 0.01  # a single missing reading
    gaps_per_day: float = 0.3  # signal-loss gaps of 15–60 min
    compression_prob_per_night: float = 0.15
    compression_depth_mg_dl: tuple[float, float] = (20.0, 50.0)
    session_days: float = 10.0
    # a sensor that reads badly off for a whole session (sensor-fault scenario)
    bad_sensor_prob: float = 0.0


def _noise(
    rng: np.random.Generator, model: CgmErrorModel, n: int, steps: int
) -> npt.NDArray[np.float64]:
    """Johnson-SU-transformed AR(1) noise with zero mean, one row per person."""
    a = model.ar_coefficient
    var_e = a * a / (1.0 - a * a)  # stationary variance of e_k = a (e_{k-1} + v_k)
    e = np.empty((n, steps))
    prev = rng.normal(0.0, math.sqrt(var_e), n)
    v = rng.normal(0.0, 1.0, (n, steps))
    for k in range(steps):
        prev = a * (prev + v[:, k])
        e[:, k] = prev
    lam, delta, gamma = model.johnson_lambda, model.johnson_delta, model.johnson_gamma
    # E[sinh(x + bZ)] = sinh(x) e^{b²/2}: subtract the mean so errors are unbiased overall
    mean = lam * math.sinh(-gamma / delta) * math.exp(var_e / (2.0 * delta * delta))
    return lam * np.sinh((e - gamma) / delta) - mean


class CohortCgm:
    """Sensors for a whole cohort over a fixed horizon of 5-minute readings."""

    def __init__(
        self,
        n_people: int,
        n_readings: int,
        rng: np.random.Generator,
        model: CgmErrorModel | None = None,
        *,
        start_session_age_min: npt.NDArray[np.float64] | None = None,
    ) -> None:
        m = model or CgmErrorModel()
        self.model = m
        n, steps = n_people, n_readings
        self.n_readings = n_readings
        t = np.arange(steps) * READING_INTERVAL_MIN
        session_min = m.session_days * 1440
        age0 = (
            start_session_age_min
            if start_session_age_min is not None
            else rng.uniform(WARMUP_MIN, session_min, n)
        )
        age = age0[:, None] + t[None, :]
        session = np.floor(age / session_min).astype(np.int64)
        age_in_session = age - session * session_min
        available = age_in_session >= WARMUP_MIN
        # calibration error per session (at most a handful of sessions in a run)
        n_sessions = int(session.max()) + 1
        gains = rng.normal(1.0, m.gain_sd, (n, n_sessions))
        offsets = rng.normal(0.0, m.offset_sd_mg_dl, (n, n_sessions))
        if m.bad_sensor_prob > 0:
            bad = rng.random((n, n_sessions)) < m.bad_sensor_prob
            gains = np.where(bad, rng.choice([0.82, 1.18], (n, n_sessions)), gains)
        rows = np.arange(n)[:, None]
        self.gain = gains[rows, session]
        self.offset = offsets[rows, session] + _noise(rng, m, n, steps)
        # single dropouts and signal-loss gaps
        available &= rng.random((n, steps)) >= m.dropout_prob
        days = steps * READING_INTERVAL_MIN / 1440
        for i in range(n):
            for _ in range(int(rng.poisson(m.gaps_per_day * days))):
                start = int(rng.integers(0, steps))
                length = int(rng.integers(3, 13))
                available[i, start : start + length] = False
        # compression lows: a trapezoid dip during the night
        n_nights = math.ceil(days)
        for i in range(n):
            for night in range(n_nights):
                if rng.random() >= m.compression_prob_per_night:
                    continue
                onset = night * 1440 + int(rng.integers(0, 6 * 60))
                duration = int(rng.integers(20, 61))
                depth = float(rng.uniform(*m.compression_depth_mg_dl))
                ramp = 10.0
                into = t - onset
                shape = np.clip(np.minimum(into, duration - into) / ramp, 0.0, 1.0)
                self.offset[i] -= depth * shape
        self.available = available

    def read(
        self, k: int, interstitial_mg_dl: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Reading `k` for every person: values limited to 40–400 and an availability mask."""
        raw = self.gain[:, k] * interstitial_mg_dl + self.offset[:, k]
        values = np.clip(np.rint(raw), CGM_LOW_MG_DL - 1, CGM_HIGH_MG_DL + 1).astype(np.int64)
        return values, self.available[:, k]

    @staticmethod
    def to_reading(t_min: int, value: int) -> CgmReading:
        """A reading from `read`'s value (below 40 / above 400 become LOW / HIGH)."""
        if value < CGM_LOW_MG_DL:
            return CgmReading(t_min, CGM_LOW_MG_DL, "LOW")
        if value > CGM_HIGH_MG_DL:
            return CgmReading(t_min, CGM_HIGH_MG_DL, "HIGH")
        return CgmReading(t_min, value)
