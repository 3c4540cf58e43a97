"""Per-app request budgets (token bucket per OAuth client, in process memory).

One gateway replica enforces its own budget; with N replicas behind a balancer the effective
limit is up to N times higher. A shared store (Redis or the database) replaces this later.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from gateway.errors import RateLimited
from services.runtime.clock import Clock

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> None:
        """Spend one request of `key`'s budget or raise RateLimited with Retry-After."""
        now_s = self._clock.monotonic_s()
        rate_per_s = per_minute / 60.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(per_minute), now_s)
            bucket.tokens = min(
                float(per_minute), bucket.tokens + (now_s - bucket.updated_s) * rate_per_s
            )
            bucket.updated_s = now_s
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait_s = max(1, math.ceil((1.0 - bucket.tokens) / rate_per_s))
        raise RateLimited(f"rate limit of {per_minute} requests per minute", retry_after_s=wait_s)
