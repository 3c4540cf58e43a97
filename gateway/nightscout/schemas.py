"""Wire shapes of the Nightscout settings (app API side); NS documents themselves are free-form."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["NsSecretIn", "NsTokenIn", "NsTokenOut"]


class NsSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: str = Field(min_length=12, max_length=200, description="≥ 12 characters")


class NsTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_]*$")


class NsTokenOut(BaseModel):
    token_id: str
    name: str
    created_at: datetime
    token: str | None = Field(default=None, description="only in the creation response")
