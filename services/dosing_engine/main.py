"""`langerhans serve dosing-engine`: input consumer, outbox relay, gRPC API, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated

from langerhans.dosing.v1 import dosing_engine_service_pb2 as pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as pb_grpc
from pydantic import Field, model_validator
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from kernels.increase_margin import DEFAULT_INCREASE_MARGIN_IOB_FRACTION
from services.dosing_engine.events import (
    COMMANDS_TOPIC,
    DECISIONS_TOPIC,
    OUTCOMES_TOPIC,
    PUMP_EVENTS_TOPIC,
    READINGS_TOPIC,
    SETTINGS_TOPIC,
    SOURCE,
    make_handler,
)
from services.dosing_engine.repository import metadata
from services.dosing_engine.servicer import DosingEngineServicer
from services.runtime import migrations
from services.runtime.command_signing import (
    CommandSigner,
    generate_signing_key,
    load_signer,
    write_private_key,
    write_public_key,
)
from services.runtime.db import create_service_engine
from services.runtime.grpc_server import run_service, servicer
from services.runtime.kafka.consumer import ConsumerRunner, RunnerConfig, await_topic_metadata
from services.runtime.kafka.producer import EventProducer
from services.runtime.outbox import OutboxRelay
from services.runtime.settings import ServiceSettings, var_dir

__all__ = ["DosingEngineSettings", "build", "load_command_signer", "run", "serve"]

SERVICE = "dosing-engine"
log = logging.getLogger(__name__)


class DosingEngineSettings(ServiceSettings):
    service_name: str = SERVICE
    consumer_group: str = "dosing-engine"
    transaction_batch: int = 50
    # The Ed25519 key that signs pump commands; unset in development means the development key
    # var/keys/command-signing.pem (shared with device-gateway, created if missing).
    command_signing_key_path: Path | None = None
    readings_topic: str = READINGS_TOPIC
    pump_events_topic: str = PUMP_EVENTS_TOPIC
    settings_topic: str = SETTINGS_TOPIC
    outcomes_topic: str = OUTCOMES_TOPIC
    decisions_topic: str = DECISIONS_TOPIC
    commands_topic: str = COMMANDS_TOPIC
    # forecast margin for increases, × IOB × ISF (kernels.increase_margin; 0 = off)
    increase_margin_iob_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = (
        DEFAULT_INCREASE_MARGIN_IOB_FRACTION
    )

    @model_validator(mode="after")
    def _production_needs_key(self) -> DosingEngineSettings:
        if self.environment == "production" and (self.command_signing_key_path is None):
            raise ValueError("production needs command_signing_key_path")
        return self


def load_command_signer(settings: DosingEngineSettings) -> CommandSigner:
    if settings.command_signing_key_path is not None:
        return load_signer(settings.command_signing_key_path)
    private = var_dir() / "keys" / "command-signing.pem"
    if not private.exists():
        signer = generate_signing_key()
        with contextlib.suppress(FileExistsError):
            write_private_key(signer, private)
            write_public_key(signer.public_key, var_dir() / "keys" / "command-signing.pub")
    return load_signer(private)


def build(settings: DosingEngineSettings) -> tuple[Engine, sessionmaker[Session]]:
    """Migrate the service's schema and return its engine and session factory."""
    migrations.upgrade(SERVICE, database_url=settings.database_url, target_metadata=metadata)
    engine = create_service_engine(SERVICE, settings.database_url)
    return engine, sessionmaker(engine, expire_on_commit=False)


async def run(settings: DosingEngineSettings, stop: asyncio.Event | None = None) -> None:
    clock = settings.clock()
    signer = load_command_signer(settings)
    engine, sessions = build(settings)
    producer = EventProducer(settings.kafka_bootstrap_servers, source=SOURCE, clock=clock)
    relay = OutboxRelay(sessions, producer, clock=clock, poll_interval_s=0.01)
    input_topics = [
        settings.readings_topic,
        settings.pump_events_topic,
        settings.settings_topic,
        settings.outcomes_topic,
    ]
    runner = ConsumerRunner(
        RunnerConfig(
            group_id=settings.consumer_group,
            topics=input_topics,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            transaction_batch=settings.transaction_batch,
            poll_timeout_ms=50,
        ),
        make_handler(
            clock,
            signer,
            decisions_topic=settings.decisions_topic,
            commands_topic=settings.commands_topic,
            increase_margin_iob_fraction=settings.increase_margin_iob_fraction,
        ),
        sessions,
        clock=clock,
    )

    async def consume(stop_event: asyncio.Event) -> None:
        relay.start()
        missing = await asyncio.to_thread(
            await_topic_metadata, settings.kafka_bootstrap_servers, input_topics
        )
        if missing:
            log.warning("topics without metadata after 30 s: %s", missing)
        task = asyncio.create_task(
            asyncio.to_thread(runner.run, install_signal_handlers=False), name="consumer"
        )
        waiter = asyncio.create_task(stop_event.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        runner.stop()
        waiter.cancel()
        try:
            await task
        finally:
            relay.stop()
            producer.close()
        if task in done and not stop_event.is_set():
            raise RuntimeError("the dosing-engine consumer stopped unexpectedly")

    definition = servicer(
        pb.DESCRIPTOR.services_by_name["DosingEngineService"].full_name,
        pb_grpc.add_DosingEngineServiceServicer_to_server,
        DosingEngineServicer(
            sessions,
            clock,
            signer,
            commands_topic=settings.commands_topic,
            increase_margin_iob_fraction=settings.increase_margin_iob_fraction,
        ),
    )
    try:
        await run_service(settings, [definition], workers=[consume], metrics=True, stop=stop)
    finally:
        engine.dispose()


def serve() -> int:
    from services.runtime.logging import configure_logging

    settings = DosingEngineSettings()
    configure_logging(settings)
    asyncio.run(run(settings))
    return 0
