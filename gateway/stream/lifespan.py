"""The app's lifespan: bind the stream hub to the loop, run the Kafka feed, close channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.clients.services import ServiceClients
from gateway.runtime import Runtime
from gateway.stream.feed import KafkaFeed
from gateway.stream.hub import StreamHub

__all__ = ["backend_lifespan"]


@asynccontextmanager
async def backend_lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    hub: StreamHub = app.state.stream_hub
    services: ServiceClients = app.state.services
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
