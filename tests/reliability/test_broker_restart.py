"""Kafka broker restarted twice mid-stream (once SIGTERM, once SIGKILL): every event the broker
acknowledged to the project's producer (idempotent, acks=all) is in the log afterwards.

Runs on a private broker (tests/reliability/broker.py) so no other test loses its broker.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from services.runtime.kafka.producer import EventProducer
from services.runtime.settings import var_dir
from services.runtime.topics import TopicSpec, ensure_topics
from tests.reliability.broker import PrivateBroker
from tests.reliability.figures import record_figure

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    # kafka-python leaves sockets to the garbage collector when the broker vanishes under it.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

EVENTS = 12_000
RATE_PER_S = 1_000
PARTITIONS = 6
DEADLINE_S = 300


@pytest.fixture
def broker() -> Any:
    root: Path = var_dir() / "reliability" / f"kafka-restart-{uuid.uuid4().hex[:6]}"
    broker = PrivateBroker(root, port=29092)
    broker.start()
    yield broker
    broker.destroy()


def test_broker_restarted_twice_loses_no_acknowledged_event(broker: PrivateBroker) -> None:
    topic = "reliability.restart.v1"
    ensure_topics([TopicSpec(topic, PARTITIONS, "restart test", replication=1)], broker.bootstrap)
    producer = EventProducer(broker.bootstrap, source="reliability/restart")
    acked: set[str] = set()
    failed: list[str] = []
    lock = threading.Lock()

    def on_ack(event_id: str) -> Any:
        def callback(_metadata: Any) -> None:
            with lock:
                acked.add(event_id)

        return callback

    def on_error(event_id: str) -> Any:
        def errback(_exc: BaseException) -> None:
            with lock:
                failed.append(event_id)

        return errback

    restart_at = {EVENTS // 3: False, 2 * EVENTS // 3: True}  # SIGTERM, then SIGKILL
    outages: list[float] = []
    restarter: threading.Thread | None = None
    started = time.monotonic()
    for n in range(EVENTS):
        patient = f"p{n % 50}"
        event_id = str(uuid.uuid4())
        future = producer.send(
            topic, patient, f"reading {n}".encode(), event_type="t.v1.Reading", event_id=event_id
        )
        future.add_callback(on_ack(event_id))
        future.add_errback(on_error(event_id))
        if n in restart_at:
            # Restart in the background: the stream goes on while the broker is away.
            hard = restart_at[n]
            restarter = threading.Thread(
                target=lambda hard=hard: outages.append(broker.restart(hard=hard))
            )
            restarter.start()
        # Steady rate, as a stream of readings would be.
        ahead_s = n / RATE_PER_S - (time.monotonic() - started)
        if ahead_s > 0:
            time.sleep(ahead_s)
        assert time.monotonic() - started < DEADLINE_S
    if restarter is not None:
        restarter.join(120)
    producer.flush(timeout_s=150)
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(partitions)
    in_log: list[str] = []
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                headers = dict(record.headers)
                in_log.append(headers["ce_id"].decode())
    consumer.close()

    lost = len(acked - set(in_log))
    duplicates = len(in_log) - len(set(in_log))
    print(
        f"events={EVENTS} acked={len(acked)} failed={len(failed)} in_log={len(in_log)} "
        f"lost={lost} duplicates={duplicates} restarts={broker.restarts} "
        f"outages_s={[round(o, 1) for o in outages]}"
    )
    record_figure("broker_restarts", broker.restarts)
    record_figure("acked_but_lost", lost)
    record_figure("broker_restart_log_duplicates", duplicates)
    assert broker.restarts == 2
    assert len(acked) > EVENTS * 0.9  # the producer retried through the outages
    assert lost == 0
