"""Injected time.

Domain code never reads the wall clock directly; it is handed a `Clock`. `AcceleratedClock`
lets every process of a demo or end-to-end test agree on simulated time: all of them are
given the same real start instant and speed factor, so simulated now is
`sim_start + (real_now - real_start) * speed` everywhere without any coordination.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["AcceleratedClock", "Clock", "FixedClock", "SystemClock", "clock_from_settings"]


class Clock(Protocol):
    """A source of the current (possibly simulated) time."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic_s(self) -> float:
        """Seconds on a monotonic scale of the same speed as `now`."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Sleep for `duration_s` seconds of this clock's time."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic_s(self) -> float:
        return time.monotonic()

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s)


@dataclass
class AcceleratedClock:
    """Simulated time running `speed` times faster than real time from a shared origin."""

    sim_start: datetime
    real_start_epoch_s: float
    speed: float

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"clock speed must be positive, got {self.speed}")
        if self.sim_start.tzinfo is None:
            raise ValueError("sim_start must be timezone-aware")

    def now(self) -> datetime:
        elapsed_real_s = time.time() - self.real_start_epoch_s
        return self.sim_start + timedelta(seconds=elapsed_real_s * self.speed)

    def monotonic_s(self) -> float:
        return time.monotonic() * self.speed

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s / self.speed)


@dataclass
class FixedClock:
    """A clock that only moves when told to (unit tests)."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def monotonic_s(self) -> float:
        return self.current.timestamp()

    def advance(self, duration_s: float) -> None:
        self.current += timedelta(seconds=duration_s)

    async def sleep(self, duration_s: float) -> None:
        self.advance(duration_s)
        await asyncio.sleep(0)


def clock_from_settings(
    speed: float, sim_start: datetime | None, real_start_epoch_s: float | None
) -> Clock:
    """The clock a process should use: real time unless a speed other than 1 is configured."""
    if speed == 1.0 and sim_start is None:
        return SystemClock()
    return AcceleratedClock(
        sim_start=sim_start or datetime.now(UTC),
        real_start_epoch_s=real_start_epoch_s if real_start_epoch_s is not None else time.time(),
        speed=speed,
    )
