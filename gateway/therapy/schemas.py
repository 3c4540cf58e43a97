"""Therapy settings wire shapes; guardrails enforced at the boundary."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.therapy.guardrails import (
    AGE_GROUP_LIMITS,
    BASAL_RATE_MAX_U_PER_H,
    BASAL_RATE_MIN_U_PER_H,
    CARB_RATIO_MAX_G_PER_U,
    CARB_RATIO_MIN_G_PER_U,
    ISF_MAX_MG_DL_PER_U,
    ISF_MIN_MG_DL_PER_U,
    MAX_BOLUS_ABSOLUTE_U,
    TARGET_MAX_MG_DL,
    TARGET_MIN_MG_DL,
    AgeGroup,
)

__all__ = [
    "BasalSegment",
    "CarbRatioSegment",
    "LoopMode",
    "SensitivitySegment",
    "TargetSegment",
    "TherapySettings",
    "TherapySettingsIn",
    "TherapySettingsOut",
    "TherapySettingsVersionOut",
]

MINUTES_PER_DAY = 1440
# How much the loop may do on its own (langerhans.common.v1 LoopMode), enabled in stages.
LoopMode = Literal["open_loop", "low_glucose_suspend", "closed_loop_temp_basal", "closed_loop_smb"]
StartMin = Annotated[int, Field(ge=0, lt=MINUTES_PER_DAY, description="minutes after midnight")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BasalSegment(_In):
    start_min: StartMin
    rate_u_per_h: float = Field(ge=BASAL_RATE_MIN_U_PER_H, le=BASAL_RATE_MAX_U_PER_H)


class CarbRatioSegment(_In):
    start_min: StartMin
    carbs_g_per_u: float = Field(ge=CARB_RATIO_MIN_G_PER_U, le=CARB_RATIO_MAX_G_PER_U)


class SensitivitySegment(_In):
    start_min: StartMin
    isf_mg_dl_per_u: float = Field(ge=ISF_MIN_MG_DL_PER_U, le=ISF_MAX_MG_DL_PER_U)


class TargetSegment(_In):
    start_min: StartMin
    low_mg_dl: float = Field(ge=TARGET_MIN_MG_DL, le=TARGET_MAX_MG_DL)
    high_mg_dl: float = Field(ge=TARGET_MIN_MG_DL, le=TARGET_MAX_MG_DL)

    @model_validator(mode="after")
    def _ordered(self) -> TargetSegment:
        if self.low_mg_dl > self.high_mg_dl:
            raise ValueError("target low must not exceed target high")
        return self


def _schedule_ok(name: str, starts: list[int]) -> None:
    if not starts:
        raise ValueError(f"{name}: at least one segment is required")
    if starts[0] != 0:
        raise ValueError(f"{name}: the first segment must start at midnight (start_min 0)")
    if any(b <= a for a, b in itertools.pairwise(starts)):
        raise ValueError(f"{name}: segments must be in strictly increasing start_min order")


class TherapySettings(_In):
    """One complete version of a person's therapy settings."""

    age_group: AgeGroup
    basal_schedule: list[BasalSegment] = Field(max_length=48)
    carb_ratios: list[CarbRatioSegment] = Field(max_length=48)
    sensitivities: list[SensitivitySegment] = Field(max_length=48)
    targets: list[TargetSegment] = Field(max_length=48)
    max_bolus_u: float = Field(gt=0, le=MAX_BOLUS_ABSOLUTE_U)
    max_basal_u_per_h: float = Field(gt=0, le=BASAL_RATE_MAX_U_PER_H)
    max_iob_u: float = Field(default=0.0, ge=0, description="0 = no automatic insulin above basal")
    loop_mode: LoopMode = Field(
        default="open_loop", description="what the dosing engine may do on its own"
    )
    time_zone: str = Field(
        default="UTC", max_length=64, description="IANA zone the schedules' start_min are read in"
    )

    @model_validator(mode="after")
    def _within_limits(self) -> TherapySettings:
        _schedule_ok("basal_schedule", [s.start_min for s in self.basal_schedule])
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.time_zone!r}") from exc
        _schedule_ok("carb_ratios", [s.start_min for s in self.carb_ratios])
        _schedule_ok("sensitivities", [s.start_min for s in self.sensitivities])
        _schedule_ok("targets", [s.start_min for s in self.targets])
        limits = AGE_GROUP_LIMITS[self.age_group]
        if self.max_bolus_u > limits.max_bolus_u:
            raise ValueError(
                f"max_bolus_u {self.max_bolus_u} exceeds the {self.age_group} hard limit "
                f"of {limits.max_bolus_u} U"
            )
        if self.max_basal_u_per_h > limits.max_basal_u_per_h:
            raise ValueError(
                f"max_basal_u_per_h {self.max_basal_u_per_h} exceeds the {self.age_group} "
                f"hard limit of {limits.max_basal_u_per_h} U/h"
            )
        if self.max_iob_u > limits.max_iob_u:
            raise ValueError(
                f"max_iob_u {self.max_iob_u} exceeds the {self.age_group} hard limit "
                f"of {limits.max_iob_u} U"
            )
        over = [s for s in self.basal_schedule if s.rate_u_per_h > self.max_basal_u_per_h]
        if over:
            raise ValueError(
                f"basal rate {over[0].rate_u_per_h} U/h at start_min {over[0].start_min} "
                f"exceeds max_basal_u_per_h {self.max_basal_u_per_h}"
            )
        return self


class TherapySettingsIn(_In):
    settings: TherapySettings
    expected_version: int = Field(
        ge=0,
        description="the version this change is based on (0 for the first); stops lost updates",
    )
    reason: str = Field(default="", max_length=500)


class TherapySettingsOut(BaseModel):
    person_id: str
    version: int
    settings: TherapySettings
    changed_by: str
    changed_at: datetime
    reason: str


class TherapySettingsVersionOut(TherapySettingsOut):
    changed_fields: list[str]
