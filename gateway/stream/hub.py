"""In-process pub/sub keyed by person id, for the live stream.

`publish` serialises an event once and offers the bytes to every subscriber of that person.
Each subscriber has a bounded queue: when a slow client falls behind, the oldest messages
are dropped and the next thing it receives is a gap marker saying how many, so one slow
phone never holds up the others (nothing in `publish` waits). All methods run on the event
loop; other threads use `publish_threadsafe`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["StreamHub", "Subscriber"]


class Subscriber:
    """One connected client's queue (drop-oldest) for the people it follows."""

    def __init__(self, max_queue: int, wants: Callable[[str, str], bool]) -> None:
        self._queue: deque[str] = deque()
        self._max = max_queue
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False
        # (person_id, event type) -> whether this client may receive it (re-checked elsewhere)
        self.wants = wants

    def offer(self, message: str) -> None:
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next_batch(self) -> list[str]:
        """Waits for messages; a gap marker comes first when some were dropped."""
        while not self._queue and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        batch: list[str] = []
        if self.dropped:
            batch.append(json.dumps({"type": "gap", "dropped": self.dropped}))
            self.dropped = 0
        batch.extend(self._queue)
        self._queue.clear()
        return batch


class StreamHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, person_id: str, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(person_id, set()).add(subscriber)

    def unsubscribe(self, person_id: str, subscriber: Subscriber) -> None:
        subs = self._subscribers.get(person_id)
        if subs is not None:
            subs.discard(subscriber)
            if not subs:
                del self._subscribers[person_id]

    def subscriber_count(self, person_id: str | None = None) -> int:
        if person_id is not None:
            return len(self._subscribers.get(person_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    def publish(self, person_id: str, event_type: str, data: dict[str, Any]) -> int:
        """Offer one event to the person's subscribers; returns how many took it."""
        subs = self._subscribers.get(person_id)
        self.published += 1
        if not subs:
            return 0
        message = json.dumps(
            {
                "type": event_type,
                "person_id": person_id,
                "published_at": time.time(),
                "data": data,
            },
            default=str,
        )
        taken = 0
        for sub in list(subs):
            if sub.wants(person_id, event_type):
                sub.offer(message)
                taken += 1
        return taken

    def publish_threadsafe(self, person_id: str, event_type: str, data: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.publish, person_id, event_type, data)
