"""Treatment records: carbs and boluses (standard, extended, dual-wave)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gateway.therapy.guardrails import MAX_BOLUS_ABSOLUTE_U, MAX_CARBS_G

__all__ = ["BolusIn", "CarbsIn", "TreatmentIn", "TreatmentOut"]

EXTENDED_MIN_DURATION_MIN = 30
EXTENDED_MAX_DURATION_MIN = 480


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    client_ref: str = Field(
        min_length=8, max_length=64, description="the client's id for this record (idempotency)"
    )
    occurred_at: AwareDatetime
    note: str = Field(default="", max_length=500)


class CarbsIn(_In):
    kind: Literal["carbs"]
    carbs_g: float = Field(gt=0, le=MAX_CARBS_G)
    absorption_min: int = Field(default=180, ge=30, le=480)


class BolusIn(_In):
    kind: Literal["bolus"]
    bolus_type: Literal["standard", "extended", "dual_wave"]
    insulin_u: float = Field(gt=0, le=MAX_BOLUS_ABSOLUTE_U, description="total of the bolus")
    immediate_percent: float | None = Field(
        default=None, gt=0, lt=100, description="dual-wave only: share delivered at once"
    )
    extended_duration_min: int | None = Field(
        default=None, ge=EXTENDED_MIN_DURATION_MIN, le=EXTENDED_MAX_DURATION_MIN
    )

    @model_validator(mode="after")
    def _shape(self) -> BolusIn:
        if self.bolus_type == "standard":
            if self.immediate_percent is not None or self.extended_duration_min is not None:
                raise ValueError("a standard bolus has no immediate_percent or duration")
        elif self.extended_duration_min is None:
            raise ValueError(f"a {self.bolus_type} bolus needs extended_duration_min")
        if self.bolus_type == "extended" and self.immediate_percent is not None:
            raise ValueError("an extended bolus delivers everything over the duration")
        if self.bolus_type == "dual_wave" and self.immediate_percent is None:
            raise ValueError("a dual-wave bolus needs immediate_percent")
        return self

    def split_u(self) -> tuple[float, float]:
        """(immediate_u, extended_u)."""
        if self.bolus_type == "standard":
            return self.insulin_u, 0.0
        if self.bolus_type == "extended":
            return 0.0, self.insulin_u
        assert self.immediate_percent is not None
        immediate_u = round(self.insulin_u * self.immediate_percent / 100.0, 3)
        return immediate_u, round(self.insulin_u - immediate_u, 3)


TreatmentIn = Annotated[CarbsIn | BolusIn, Field(discriminator="kind")]


class TreatmentOut(BaseModel):
    treatment_id: str
    client_ref: str
    kind: str
    occurred_at: datetime
    carbs_g: float | None = None
    absorption_min: int | None = None
    bolus_type: str | None = None
    insulin_u: float | None = None
    immediate_u: float | None = None
    extended_u: float | None = None
    extended_duration_min: int | None = None
    note: str
    entered_by: str
