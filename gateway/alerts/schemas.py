"""Wire shapes of alerts (app API) and Dexcom-v3-like alert records (partner API)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_SNOOZE_MIN",
    "AcknowledgeIn",
    "AlertOut",
    "AlertPage",
    "PartnerAlertRecord",
    "PartnerAlertsOut",
    "SnoozeIn",
    "SnoozeOut",
]

MAX_SNOOZE_MIN = 240


class AlertOut(BaseModel):
    alert_id: str
    person_id: str
    type: str
    severity: str
    state: str
    title: str
    message: str
    glucose_mg_dl: float | None
    raised_at: datetime | None
    updated_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    snoozed_until: datetime | None
    resolved_at: datetime | None
    escalation_tier: str


class AlertPage(BaseModel):
    alerts: list[AlertOut]
    next_page_token: str | None


class AcknowledgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=500)


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_min: int = Field(ge=5, le=MAX_SNOOZE_MIN)


class SnoozeOut(BaseModel):
    alert: AlertOut
    capped: bool = Field(description="the service shortened the snooze (e.g. urgent low)")


class PartnerAlertRecord(BaseModel):
    recordId: str  # noqa: N815 - Dexcom v3 names
    systemTime: datetime | None  # noqa: N815
    displayTime: datetime | None  # noqa: N815
    alertName: str  # noqa: N815
    alertState: str  # noqa: N815
    severity: str
    value: float | None
    unit: Literal["mg/dL"] = "mg/dL"


class PartnerAlertsOut(BaseModel):
    recordType: Literal["alert"] = "alert"  # noqa: N815
    recordVersion: Literal["3.0"] = "3.0"  # noqa: N815
    userId: str  # noqa: N815
    records: list[PartnerAlertRecord]
