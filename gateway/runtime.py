"""What one running gateway holds: settings, clock, storage, keys and shared helpers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.glucose.source import GlucoseSource
from gateway.partner.ratelimit import RateLimiter
from gateway.security.keys import KeyRing
from gateway.security.passwords import Passwords
from gateway.security.tokens import TokenIssuer
from gateway.settings import GatewaySettings
from services.runtime.clock import Clock

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: GatewaySettings
    clock: Clock
    engine: Engine
    session_factory: sessionmaker[Session]
    # For requests that only read: DEFERRED, write-refusing sessions on SQLite (gateway.db).
    read_session_factory: sessionmaker[Session]
    keys: KeyRing
    tokens: TokenIssuer
    passwords: Passwords
    glucose: GlucoseSource
    rate_limiter: RateLimiter

    @property
    def pepper(self) -> str:
        return self.settings.secret_pepper.get_secret_value()
