"""Wire shapes for devices and enrolment tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DeviceKind", "DeviceOut", "EnrolmentTokenIn", "EnrolmentTokenOut"]

DeviceKind = Literal["hub", "pump", "cgm"]


class EnrolmentTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    device_kind: DeviceKind = "hub"
    device_name: str = Field(default="pump hub", min_length=1, max_length=100)


class EnrolmentTokenOut(BaseModel):
    token_id: str
    token: str = Field(description="one-time enrolment token; shown once")
    expires_at: datetime


class DeviceOut(BaseModel):
    device_id: str
    kind: str
    name: str
    enrolled_at: datetime
    active: bool
