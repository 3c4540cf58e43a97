"""AGP report wire shapes (mirrors `gateway.reports.agp`)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AgpMetricsOut", "AgpReportOut", "DailyTraceOut", "PercentileBinOut"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AgpMetricsOut(_Out):
    readings: int
    coverage_pct: float = Field(description="share of 5-minute slots with a reading")
    mean_mg_dl: float | None
    sd_mg_dl: float | None
    cv_pct: float | None
    gmi_pct: float | None
    tir_pct: float | None = Field(description="70–180 mg/dL")
    tbr70_pct: float | None = Field(description="< 70 mg/dL")
    tbr54_pct: float | None = Field(description="< 54 mg/dL")
    tar180_pct: float | None = Field(description="> 180 mg/dL")
    tar250_pct: float | None = Field(description="> 250 mg/dL")
    sufficient_data: bool = Field(description="CGM active for at least 70 % of the period")


class PercentileBinOut(_Out):
    minute_of_day: int
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None


class DailyTraceOut(_Out):
    date: date
    minutes: list[int]
    glucose_mg_dl: list[int]
    tir_pct: float | None


class AgpReportOut(_Out):
    person_id: str
    display_name: str
    timezone: str
    days: int
    start: datetime
    end: datetime
    metrics: AgpMetricsOut
    percentiles: list[PercentileBinOut]
    daily: list[DailyTraceOut]
