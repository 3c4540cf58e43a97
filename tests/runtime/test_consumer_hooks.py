"""ConsumerRunner's public hooks against the real broker: when each is called, and with what."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from kafka.structs import TopicPartition
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.kafka import ConsumerRunner, Envelope, EventProducer, RunnerConfig, dedupe
from tests.runtime.conftest import wait_until

pytestmark = [pytest.mark.kafka]

TIMEOUT_S = 60.0


class RecordingRunner(ConsumerRunner):
    """Handles each batch newest first and records every hook call."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[tuple[str, object]] = []
        self.batches: list[list[Envelope]] = []
        self.committed: list[Envelope] = []
        self.assigned: set[TopicPartition] = set()
        self.revoked: set[TopicPartition] = set()

    def order_batch(self, envelopes: list[Envelope]) -> Sequence[int] | None:
        return sorted(range(len(envelopes)), key=lambda i: -envelopes[i].offset)

    def on_batch_start(self, envelopes: list[Envelope]) -> None:
        self.calls.append(("start", len(envelopes)))
        self.batches.append(list(envelopes))

    def on_batch_end(self, envelopes: list[Envelope], *, committed: bool) -> None:
        self.calls.append(("end", committed))

    def on_committed(self, envelopes: list[Envelope]) -> None:
        self.calls.append(("committed", len(envelopes)))
        self.committed.extend(envelopes)

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        self.assigned |= partitions

    def on_partitions_revoked(self, partitions: set[TopicPartition], *, lost: bool) -> None:
        self.revoked |= partitions


def test_hooks_order_the_batch_bracket_it_and_report_commits_and_partitions(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=2)
    values = [f"v{i}" for i in range(30)] + ["boom"] + [f"w{i}" for i in range(9)]
    with EventProducer(kafka_bootstrap, source="test-hooks") as producer:
        for value in values:
            producer.send(topic, "patient-1", value.encode(), event_type="test.Value")
        # The same event twice: handled once, reported committed once.
        for _ in range(2):
            producer.send(
                topic, "patient-2", b"again", event_type="test.Value", event_id="ev-repeated"
            )
        producer.flush()
    expected = len(values) + 1

    engine = create_engine(f"sqlite:///{tmp_path / 'hooks.sqlite3'}")
    dedupe.create_tables(engine)
    handled_order: list[tuple[int, int]] = []
    failed_once: list[bool] = []

    def handler(event: Envelope, _session: Session) -> None:
        if event.data == b"boom" and not failed_once:
            failed_once.append(True)
            raise RuntimeError("fails once: the batch rolls back, then one by one")
        handled_order.append((event.partition, event.offset))

    runner = RecordingRunner(
        RunnerConfig(
            group_id=f"g-{topic}",
            topics=[topic],
            bootstrap_servers=kafka_bootstrap,
            transaction_batch=500,
            backoff_initial_s=0.01,
        ),
        handler,
        sessionmaker(engine),
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        wait_until(lambda: len(runner.committed) >= expected, TIMEOUT_S, "every event committed")
    finally:
        runner.stop()
        thread.join(30)
        engine.dispose()
    assert not thread.is_alive()

    # Every event reported committed exactly once, the repeated one too.
    ids = [e.event_id for e in runner.committed]
    assert len(ids) == len(set(ids)) == expected
    # Every batch was handed to the hooks and the handler newest first, as order_batch asked.
    for batch in runner.batches:
        offsets = [(e.partition, e.offset) for e in batch]
        assert offsets == sorted(offsets, key=lambda po: -po[1])
    first = [(e.partition, e.offset) for e in runner.batches[0]]
    boom = [i for i, e in enumerate(runner.batches[0]) if e.data == b"boom"]
    prefix = boom[0] if boom else len(first)
    assert handled_order[:prefix] == first[:prefix]
    # Each start is followed by its end; the batch with "boom" ended uncommitted.
    starts_and_ends = [name for name, _ in runner.calls if name in ("start", "end")]
    assert starts_and_ends == ["start", "end"] * (len(starts_and_ends) // 2)
    assert ("end", False) in runner.calls
    assert runner.assigned == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    assert runner.revoked == runner.assigned  # handed back when the member stops
