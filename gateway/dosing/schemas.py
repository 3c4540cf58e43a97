"""Wire shapes of the bolus calculator, remote bolus, forecast and loop status."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_CARBS_G",
    "BolusBreakdownOut",
    "BolusCalculationIn",
    "BolusRecommendationOut",
    "BolusRequestIn",
    "BolusRequestOut",
    "BolusWarningOut",
    "DeviceStatusOut",
    "ForecastLineOut",
    "ForecastOut",
    "LoopStatusOut",
]

MAX_CARBS_G = 250.0
MAX_BOLUS_U = 30.0
BolusKindName = Literal["standard", "extended", "dual_wave"]


class BolusCalculationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    carbs_g: float = Field(default=0.0, ge=0, le=MAX_CARBS_G)
    glucose_mg_dl: float | None = Field(
        default=None, ge=40, le=400, description="unset = the latest validated reading"
    )
    kind: BolusKindName = "standard"
    immediate_pct: float = Field(
        default=100.0, ge=0, le=100, description="dual-wave: share delivered now"
    )
    extended_duration_min: int = Field(default=0, ge=0, le=480)

    @model_validator(mode="after")
    def _shape(self) -> BolusCalculationIn:
        if self.kind != "standard" and not 30 <= self.extended_duration_min <= 480:
            raise ValueError("extended and dual-wave boluses need extended_duration_min 30–480")
        if self.kind == "standard" and self.extended_duration_min:
            raise ValueError("a standard bolus has no extended part")
        if self.kind == "dual_wave" and not 0 < self.immediate_pct < 100:
            raise ValueError("a dual-wave bolus needs immediate_pct between 0 and 100")
        return self


class BolusRequestIn(BolusCalculationIn):
    insulin_u: float | None = Field(
        default=None,
        gt=0,
        le=MAX_BOLUS_U,
        description="amount to deliver; unset = the recommendation; never above it",
    )


class BolusWarningOut(BaseModel):
    code: str
    message: str


class BolusBreakdownOut(BaseModel):
    carb_insulin_u: float
    correction_insulin_u: float
    iob_u: float
    carb_ratio_g_per_u: float
    isf_mg_dl_per_u: float
    target_mg_dl: float
    unlimited_insulin_u: float


class BolusRecommendationOut(BaseModel):
    recommended_insulin_u: float
    immediate_insulin_u: float
    extended_insulin_u: float
    extended_duration_min: int
    breakdown: BolusBreakdownOut
    warnings: list[BolusWarningOut]
    glucose_mg_dl: float | None
    reading_id: str | None
    cob_g: float
    settings_version: int
    calculated_at: datetime


class BolusRequestOut(BaseModel):
    request_id: str
    person_id: str
    requested_by: str
    origin: Literal["manual", "remote"]
    status: Literal["pending", "issued", "refused", "uncertain", "expired"]
    kind: BolusKindName
    insulin_u: float
    immediate_pct: float
    extended_duration_min: int
    carbs_g: float
    recommendation: BolusRecommendationOut
    expires_at: datetime
    confirmed_at: datetime | None
    command_id: str | None
    outcome: str | None


class ForecastLineOut(BaseModel):
    kind: str
    start_time: datetime
    interval_min: int
    glucose_mg_dl: list[float]


class ForecastOut(BaseModel):
    available: bool
    lines: list[ForecastLineOut]
    eventual_glucose_mg_dl: float | None
    min_predicted_glucose_mg_dl: float | None
    min_predicted_at: datetime | None
    iob_u: float
    cob_g: float
    reading_id: str | None


class DeviceStatusOut(BaseModel):
    device_id: str | None
    hub_connected: bool
    hub_last_seen_at: datetime | None
    pump_last_seen_at: datetime | None
    cgm_last_seen_at: datetime | None
    reservoir_u: float | None
    battery_pct: float | None
    pump_suspended: bool | None
    reasons: list[str]
    summary: str


class LoopStatusOut(BaseModel):
    looping: bool
    mode: str
    reasons: list[str]
    summary: str
    last_enacted_at: datetime | None
    last_decision_at: datetime | None
    last_decision_id: str | None
    iob_u: float | None
    cob_g: float | None
    eventual_glucose_mg_dl: float | None
    device: DeviceStatusOut | None
    device_note: str | None = None
