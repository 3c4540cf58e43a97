"""The app's lifespan: bind the stream hub to the loop, run the Kafka feed, close channels.

At the first start-up in a process it also freezes what exists by then (`gc.freeze`): the
routes, models, schemas and libraries (~250k objects) live as long as the process, and a full
collection walking them pauses every request on the worker for 100–300 ms on a busy machine.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.clients.services import ServiceClients
from gateway.runtime import Runtime
from gateway.stream.feed import KafkaFeed
from gateway.stream.hub import StreamHub

__all__ = ["backend_lifespan"]

_frozen = False


def _freeze_startup_objects() -> None:
    global _frozen  # noqa: PLW0603 - once per process
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


@asynccontextmanager
async def backend_lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    hub: StreamHub = app.state.stream_hub
    services: ServiceClients = app.state.services
    _freeze_startup_objects()
    hub.bind_loop(asyncio.get_running_loop())
    feed: KafkaFeed | None = None
    if runtime.settings.stream_kafka_enabled:
        feed = KafkaFeed(hub, runtime.settings.kafka_bootstrap_servers)
        feed.start()
    app.state.stream_feed = feed
    try:
        yield
    finally:
        if feed is not None:
            await asyncio.to_thread(feed.stop)
        await services.channels.close()
