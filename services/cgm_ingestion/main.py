"""`langerhans serve cgm-ingestion`: raw-reading consumer, outbox relay, gRPC API, /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from kafka.structs import TopicPartition
from langerhans.cgm.v1 import cgm_ingestion_service_pb2 as pb
from langerhans.cgm.v1 import cgm_ingestion_service_pb2_grpc as pb_grpc
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.cgm_ingestion.events import (
    EVENTS_TOPIC,
    RAW_TOPIC,
    READINGS_TOPIC,
    SOURCE,
    RawHandler,
    make_handler,
    measured_order_key,
)
from services.cgm_ingestion.repository import SeriesCache, metadata
from services.cgm_ingestion.servicer import CgmIngestionServicer
from services.runtime import migrations
from services.runtime.db import create_service_engine, snapshot_engine
from services.runtime.grpc_server import run_service, servicer
from services.runtime.kafka.consumer import ConsumerRunner, RunnerConfig, await_topic_metadata
from services.runtime.kafka.envelope import Envelope
from services.runtime.kafka.producer import EventProducer
from services.runtime.outbox import OutboxRelay
from services.runtime.settings import (
    STREAM_FETCH_MAX_WAIT_MS,
    STREAM_FETCH_MIN_BYTES,
    ServiceSettings,
)
from services.runtime.writer_lock import serialize_writers

__all__ = ["CgmIngestionSettings", "build", "serve"]

SERVICE = "cgm-ingestion"
log = logging.getLogger(__name__)
# A scan pass must move more rows than one transaction writes (readings plus events).
RELAY_BATCH = 5000


class CgmIngestionSettings(ServiceSettings):
    service_name: str = SERVICE
    consumer_group: str = "cgm-ingestion"
    kafka_fetch_min_bytes: int = STREAM_FETCH_MIN_BYTES  # a high-rate stream: batched fetches
    kafka_fetch_max_wait_ms: int = STREAM_FETCH_MAX_WAIT_MS
    # Night hours for compression-low recognition are read in this zone.
    night_time_zone: str = "UTC"
    # Records per poll and per storage transaction. 2,000 rather than 500: per person and
    # per batch the series cache copies and trims each series, and a commit rewrites the same
    # index pages (random identities and event ids) whatever it carries; a burst of 500 people
    # then costs ~15 % less CPU per reading (replay harness, see docs/cgm-ingestion.md). A
    # steady stream polls fewer records than that, so its latency does not change.
    transaction_batch: int = 2000
    # Several consumer processes of one group may share a database; one relay publishes the
    # outbox (a second one would only publish rows twice).
    outbox_relay: bool = True
    raw_topic: str = RAW_TOPIC
    readings_topic: str = READINGS_TOPIC
    events_topic: str = EVENTS_TOPIC


class TimeOrderedRunner(ConsumerRunner):
    """Handles each poll's run of raw readings in measurement order per person.

    A hub's backfill after an outage arrives as a burst in any order; sorting the burst before
    handling publishes it downstream in time order. Readings arriving in a later poll than
    newer ones are still published once, flagged as backfill.
    """

    cache: SeriesCache | None = None
    raw_handler: RawHandler | None = None
    # Called after each storage commit (the outbox relay's wake-up: publish without polling delay).
    committed: Callable[[], None] | None = None

    def order_batch(self, envelopes: list[Envelope]) -> Sequence[int]:
        if self.raw_handler is None:
            return sorted(range(len(envelopes)), key=lambda i: measured_order_key(envelopes[i]))
        return self.raw_handler.order(envelopes)

    def on_batch_end(self, envelopes: list[Envelope], *, committed: bool) -> None:
        if self.raw_handler is not None:
            self.raw_handler.end_batch()

    def on_committed(self, envelopes: list[Envelope]) -> None:
        if self.committed is not None:
            self.committed()

    def on_partitions_revoked(self, partitions: set[TopicPartition], *, lost: bool) -> None:
        # Partitions moved: another member may now write series this cache holds.
        if self.cache is not None:
            self.cache.clear()


def build(settings: CgmIngestionSettings) -> tuple[Engine, sessionmaker[Session]]:
    """Migrate the service's schema and return its engine and session factory."""
    migrations.upgrade(SERVICE, database_url=settings.database_url, target_metadata=metadata)
    engine = create_service_engine(SERVICE, settings.database_url)
    # The consumer, the outbox relay (and in alerts the scheduler and delivery worker) queue
    # for the SQLite write lock in order instead of busy-polling it (relay starvation).
    serialize_writers(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


async def run(settings: CgmIngestionSettings, stop: asyncio.Event | None = None) -> None:
    clock = settings.clock()
    engine, sessions = build(settings)
    producer = EventProducer(settings.kafka_bootstrap_servers, source=SOURCE, clock=clock)
    # A relay pass waits for the write lock twice (read, then mark), i.e. behind up to two
    # consumer transactions: it must move more rows per pass than a transaction writes, or
    # it falls behind whenever the consumer has a backlog.
    # On SQLite the relay reads pending rows from a WAL snapshot, without the write lock.
    readers = snapshot_engine(SERVICE, settings.database_url, engine)
    relay = OutboxRelay(
        sessions,
        producer,
        clock=clock,
        batch_size=RELAY_BATCH,
        # Woken after each consumer commit; the poll only catches other writers' rows.
        poll_interval_s=0.05,
        read_session_factory=sessionmaker(readers) if readers is not None else None,
    )
    cache = SeriesCache()
    handler = make_handler(
        clock, settings.night_time_zone, settings.readings_topic, settings.events_topic, cache=cache
    )
    runner = TimeOrderedRunner(
        RunnerConfig(
            group_id=settings.consumer_group,
            topics=[settings.raw_topic],
            bootstrap_servers=settings.kafka_bootstrap_servers,
            transaction_batch=settings.transaction_batch,
            max_poll_records=settings.transaction_batch,
            poll_timeout_ms=50,
            consumer_overrides=settings.consumer_overrides(),
        ),
        handler,
        sessions,
        clock=clock,
    )
    runner.cache = cache
    runner.raw_handler = handler
    if settings.outbox_relay:
        # Each batch transaction hands its committed rows to the relay (published without
        # being read back) and carries the relay's marks; anything else wakes a scan.
        relay.attach(sessions)

    async def consume(stop_event: asyncio.Event) -> None:
        if settings.outbox_relay:
            relay.start()
        missing = await asyncio.to_thread(
            await_topic_metadata, settings.kafka_bootstrap_servers, [settings.raw_topic]
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
            raise RuntimeError("the raw-reading consumer stopped unexpectedly")

    definition = servicer(
        pb.DESCRIPTOR.services_by_name["CgmIngestionService"].full_name,
        pb_grpc.add_CgmIngestionServiceServicer_to_server,
        CgmIngestionServicer(sessions, clock, settings.night_time_zone),
    )
    try:
        await run_service(settings, [definition], workers=[consume], metrics=True, stop=stop)
    finally:
        engine.dispose()
        if readers is not None:
            readers.dispose()


def serve() -> int:
    from services.runtime.gc_tuning import settle_heap
    from services.runtime.logging import configure_logging

    settings = CgmIngestionSettings()
    configure_logging(settings)
    settle_heap()  # the collector no longer walks the start-up heap (latency, CPU)
    asyncio.run(run(settings))
    return 0
