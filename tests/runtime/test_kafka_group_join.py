"""Group membership against the real broker: a member always ends up with its partitions.

Regression test for the kafka-python 3.x join bug worked around in
`services.runtime.kafka.consumer.count_pending_join_as_rejoin`: a member that joins before its
topic's metadata arrived assigns itself nothing, rejoins once the metadata is there, and, when
`poll()` times out during that second join, never collected the result (no partitions, ever).
A 5 ms poll timeout makes that timing almost certain; before the fix every such member idled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.kafka import ConsumerRunner, Envelope, EventProducer, RunnerConfig, dedupe
from services.runtime.kafka.consumer import count_pending_join_as_rejoin
from tests.runtime.conftest import wait_until

pytestmark = [pytest.mark.kafka]

JOIN_TIMEOUT_S = 45.0


@pytest.mark.parametrize("attempt", range(3))
def test_member_polling_with_a_tiny_timeout_gets_its_partitions_and_consumes(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path, attempt: int
) -> None:
    topic = make_topic(partitions=4)
    count = 40
    with EventProducer(kafka_bootstrap, source="test-join") as producer:
        for i in range(count):
            producer.send(topic, f"patient-{i}", str(i).encode(), event_type="test.Value")
        producer.flush()

    engine = create_engine(f"sqlite:///{tmp_path / 'join.sqlite3'}")
    dedupe.create_tables(engine)
    handled: list[str] = []

    def handler(event: Envelope, _session: Session) -> None:
        handled.append(event.event_id)

    runner = ConsumerRunner(
        RunnerConfig(
            group_id=f"g-{topic}",
            topics=[topic],
            bootstrap_servers=kafka_bootstrap,
            poll_timeout_ms=5,
            transaction_batch=10,
        ),
        handler,
        sessionmaker(engine),
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        wait_until(lambda: len(handled) >= count, JOIN_TIMEOUT_S, f"{count} events handled")
    finally:
        runner.stop()
        thread.join(30)
        engine.dispose()
    assert not thread.is_alive()
    assert len(handled) == len(set(handled)) == count


def test_bare_consumer_with_a_group_gets_its_partitions_too(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """Services with their own poll loop (the device gateway's command consumer) are covered:
    importing the backbone installs the work-around for every KafkaConsumer."""
    topic = make_topic(partitions=4)
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", enable_auto_commit=False
    )
    try:
        assert count_pending_join_as_rejoin(consumer)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=5)
        assert len(consumer.assignment()) == 4
    finally:
        consumer.close(autocommit=False)
