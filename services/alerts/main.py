"""`langerhans serve alerts`: consumer, scheduler, delivery worker, outbox relay, gRPC, /metrics."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from langerhans.alerts.v1 import alerts_service_pb2 as pb
from langerhans.alerts.v1 import alerts_service_pb2_grpc as pb_grpc
from pydantic import model_validator
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.alerts.channels import DeliveryWorker, EmailSender, Sender, WebhookSender
from services.alerts.events import (
    ALERTS_TOPIC,
    DELIVERIES_TOPIC,
    INPUT_TOPICS,
    SOURCE,
    AlertsHandler,
    AlertTopics,
    OutboxAlertEvents,
    make_handler,
)
from services.alerts.lifecycle import Tier
from services.alerts.metrics import refresh_alerts_active
from services.alerts.repository import AlertRepository, BatchView, metadata
from services.alerts.service import AlertsService, Channel, EscalationPlan, Recipient
from services.alerts.servicer import AlertsServicer
from services.runtime import migrations
from services.runtime.clock import Clock
from services.runtime.db import create_service_engine, session_scope, snapshot_engine
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

__all__ = ["AlertsSettings", "Scheduler", "build", "run", "serve"]

SERVICE = "alerts"
DEV_WEBHOOK_SECRET = "development-only-webhook-secret"  # noqa: S105 (refused in production)
log = logging.getLogger(__name__)
RELAY_BATCH = 2000
# People whose time-based rules are re-evaluated in one transaction.
TIME_RULES_CHUNK = 100
# How often the open-alerts-by-state gauge is recounted from storage.
ALERTS_GAUGE_INTERVAL_S = 5.0


class AlertsSettings(ServiceSettings):
    service_name: str = SERVICE
    consumer_group: str = "alerts"
    kafka_fetch_min_bytes: int = STREAM_FETCH_MIN_BYTES  # a high-rate stream: batched fetches
    kafka_fetch_max_wait_ms: int = STREAM_FETCH_MAX_WAIT_MS
    input_topics: tuple[str, ...] = INPUT_TOPICS
    alerts_topic: str = ALERTS_TOPIC
    deliveries_topic: str = DELIVERIES_TOPIC
    # Up to a whole poll (500) per transaction: one fsync and one batch load per poll.
    transaction_batch: int = 500
    webhook_secret: str = DEV_WEBHOOK_SECRET
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    email_sender: str = "alerts@langerhans.local"
    # Also notify this webhook at the person's tier when a person has no policy of their own
    # (an operator's or integration partner's endpoint).
    default_webhook_url: str = ""
    scheduler_interval_s: float = 1.0
    time_rules_interval_s: float = 30.0
    delivery_interval_s: float = 0.2

    @model_validator(mode="after")
    def _refuse_dev_secret(self) -> AlertsSettings:
        if self.environment == "production" and self.webhook_secret == DEV_WEBHOOK_SECRET:
            raise ValueError("set LANGERHANS_WEBHOOK_SECRET: the development secret is public")
        return self

    def topics(self) -> AlertTopics:
        return AlertTopics(self.alerts_topic, self.deliveries_topic)

    def default_plan(self) -> EscalationPlan | None:
        if not self.default_webhook_url:
            return None
        return EscalationPlan(
            (Recipient("platform-webhook", Tier.PERSON, Channel.WEBHOOK, self.default_webhook_url),)
        )


class BatchRunner(ConsumerRunner):
    """Tells the handler which events share the poll batch's transaction, so it loads and
    writes their people together."""

    batch_handler: AlertsHandler | None = None
    # Called after each storage commit (the outbox relay's wake-up: publish without polling delay).
    committed: Callable[[], None] | None = None

    def on_batch_start(self, envelopes: list[Envelope]) -> None:
        if self.batch_handler is not None:
            self.batch_handler.begin_batch(envelopes)

    def on_batch_end(self, envelopes: list[Envelope], *, committed: bool) -> None:
        if self.batch_handler is not None:
            self.batch_handler.end_batch()

    def on_committed(self, envelopes: list[Envelope]) -> None:
        if self.committed is not None:
            self.committed()


def build(settings: AlertsSettings) -> tuple[Engine, sessionmaker[Session]]:
    migrations.upgrade(SERVICE, database_url=settings.database_url, target_metadata=metadata)
    engine = create_service_engine(SERVICE, settings.database_url)
    # The consumer, the outbox relay (and in alerts the scheduler and delivery worker) queue
    # for the SQLite write lock in order instead of busy-polling it (relay starvation).
    serialize_writers(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


class Scheduler:
    """Fires persisted timers (escalation, repeat, snooze end) and the time-based rules."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        topics: AlertTopics,
        default_plan: EscalationPlan | None,
        time_rules_interval_s: float,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._topics = topics
        self._plan = default_plan
        self._time_rules_interval_s = time_rules_interval_s
        self._last_time_rules_s = float("-inf")
        self._last_gauge_s = float("-inf")

    def _service(self, session: Session) -> AlertsService:
        return AlertsService(
            AlertRepository(session, self._plan),
            OutboxAlertEvents(session, self._clock, self._topics),
            self._clock,
        )

    def run_once(self) -> int:
        with session_scope(self._sessions) as session:
            fired = len(self._service(session).tick().deliveries)
        now_s = self._clock.monotonic_s()
        if now_s - self._last_gauge_s >= ALERTS_GAUGE_INTERVAL_S:
            self._last_gauge_s = now_s
            refresh_alerts_active(self._sessions)
        if now_s - self._last_time_rules_s >= self._time_rules_interval_s:
            self._last_time_rules_s = now_s
            with self._sessions() as session:
                patients = AlertRepository(session).patient_ids()
            for start in range(0, len(patients), TIME_RULES_CHUNK):
                self._reevaluate(patients[start : start + TIME_RULES_CHUNK])
        return fired

    def _reevaluate(self, patients: list[str]) -> None:
        """Time-based rules for `patients` in one transaction (one fsync, three queries to
        load them); if anything fails, again one person per transaction."""
        try:
            with session_scope(self._sessions) as session:
                BatchView.start(session, patients)
                service = self._service(session)
                for patient in patients:
                    service.reevaluate(patient)
            return
        except Exception as exc:
            log.warning("time rules for %d people failed (%s); one by one", len(patients), exc)
        for patient in patients:
            with session_scope(self._sessions) as session:
                self._service(session).reevaluate(patient)


def _loop(name: str, stop: threading.Event, interval_s: float, body: Callable[[], int]) -> None:
    while not stop.is_set():
        try:
            busy = body()
        except Exception:
            log.exception("%s pass failed; retrying", name)
            busy = 0
        if not busy:
            stop.wait(interval_s)


async def run(settings: AlertsSettings, stop: asyncio.Event | None = None) -> None:
    clock = settings.clock()
    engine, sessions = build(settings)
    topics = settings.topics()
    plan = settings.default_plan()
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
    handler = make_handler(clock, topics, plan)
    runner = BatchRunner(
        RunnerConfig(
            group_id=settings.consumer_group,
            topics=settings.input_topics,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            transaction_batch=settings.transaction_batch,
            poll_timeout_ms=50,
            consumer_overrides=settings.consumer_overrides(),
        ),
        handler,
        sessions,
        clock=clock,
    )
    runner.batch_handler = handler
    runner.committed = relay.wake
    senders: dict[Channel, Sender] = {
        Channel.WEBHOOK: WebhookSender(settings.webhook_secret.encode()).send,
        Channel.EMAIL: EmailSender(
            settings.smtp_host, settings.smtp_port, settings.email_sender
        ).send,
    }
    worker = DeliveryWorker(
        sessions, lambda session: OutboxAlertEvents(session, clock, topics), clock, senders
    )
    scheduler = Scheduler(sessions, clock, topics, plan, settings.time_rules_interval_s)

    async def background(stop_event: asyncio.Event) -> None:
        halt = threading.Event()
        relay.start()
        missing = await asyncio.to_thread(
            await_topic_metadata, settings.kafka_bootstrap_servers, list(settings.input_topics)
        )
        if missing:
            log.warning("topics without metadata after 30 s: %s", missing)
        threads = [
            threading.Thread(
                target=_loop,
                args=("scheduler", halt, settings.scheduler_interval_s, scheduler.run_once),
                daemon=True,
            ),
            threading.Thread(
                target=_loop,
                args=("deliveries", halt, settings.delivery_interval_s, worker.run_once),
                daemon=True,
            ),
        ]
        for thread in threads:
            thread.start()
        consumer = asyncio.create_task(
            asyncio.to_thread(runner.run, install_signal_handlers=False), name="consumer"
        )
        waiter = asyncio.create_task(stop_event.wait())
        done, _ = await asyncio.wait({consumer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        runner.stop()
        halt.set()
        waiter.cancel()
        try:
            await consumer
        finally:
            for thread in threads:
                await asyncio.to_thread(thread.join, 30)
            worker.close()
            relay.stop()
            producer.close()
        if consumer in done and not stop_event.is_set():
            raise RuntimeError("the alerts consumer stopped unexpectedly")

    definition = servicer(
        pb.DESCRIPTOR.services_by_name["AlertsService"].full_name,
        pb_grpc.add_AlertsServiceServicer_to_server,
        AlertsServicer(sessions, clock, topics, plan),
    )
    try:
        await run_service(settings, [definition], workers=[background], metrics=True, stop=stop)
    finally:
        engine.dispose()
        if readers is not None:
            readers.dispose()


def serve() -> int:
    from services.runtime.gc_tuning import settle_heap
    from services.runtime.logging import configure_logging

    settings = AlertsSettings()
    configure_logging(settings)
    settle_heap()  # the collector no longer walks the start-up heap (latency, CPU)
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
