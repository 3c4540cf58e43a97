"""Glucose wire shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["GlucosePage", "GlucoseReadingOut"]


class GlucoseReadingOut(BaseModel):
    record_id: str
    time: datetime
    glucose_mg_dl: int
    trend: str | None
    trend_rate_mg_dl_per_min: float | None
    device: str | None


class GlucosePage(BaseModel):
    readings: list[GlucoseReadingOut]
    next_end: datetime | None = None  # pass as `end` for the next (older) page
