"""Therapy-setting guardrails (brief §6): absolute bounds and hard limits per age group.

A value outside these is refused with a clear error; nothing is clamped silently. Where the
general guardrail and the age-group limit differ, the stricter one applies (so the pregnant
group's 60 U bolus limit is capped by the 30 U absolute guardrail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AGE_GROUP_LIMITS",
    "BASAL_RATE_MAX_U_PER_H",
    "BASAL_RATE_MIN_U_PER_H",
    "CARB_RATIO_MAX_G_PER_U",
    "CARB_RATIO_MIN_G_PER_U",
    "ISF_MAX_MG_DL_PER_U",
    "ISF_MIN_MG_DL_PER_U",
    "MAX_BOLUS_ABSOLUTE_U",
    "MAX_CARBS_G",
    "TARGET_MAX_MG_DL",
    "TARGET_MIN_MG_DL",
    "AgeGroup",
    "AgeGroupLimits",
]

ISF_MIN_MG_DL_PER_U = 10.0
ISF_MAX_MG_DL_PER_U = 500.0
CARB_RATIO_MIN_G_PER_U = 2.0
CARB_RATIO_MAX_G_PER_U = 150.0
BASAL_RATE_MIN_U_PER_H = 0.0
BASAL_RATE_MAX_U_PER_H = 30.0
MAX_BOLUS_ABSOLUTE_U = 30.0
MAX_CARBS_G = 250.0
# Correction targets: Loop/Tidepool-style bounds, never aim for a low.
TARGET_MIN_MG_DL = 80.0
TARGET_MAX_MG_DL = 180.0

AgeGroup = Literal["child", "teen", "adult", "resistant", "pregnant"]


@dataclass(frozen=True)
class AgeGroupLimits:
    max_bolus_u: float
    max_basal_u_per_h: float
    max_iob_u: float


AGE_GROUP_LIMITS: dict[str, AgeGroupLimits] = {
    "child": AgeGroupLimits(5.0, 2.0, 7.0),
    "teen": AgeGroupLimits(10.0, 5.0, 13.0),
    "adult": AgeGroupLimits(17.0, 10.0, 22.0),
    "resistant": AgeGroupLimits(25.0, 12.0, 30.0),
    "pregnant": AgeGroupLimits(60.0, 25.0, 70.0),
}
