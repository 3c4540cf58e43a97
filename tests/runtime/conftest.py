"""Kafka fixtures: the real broker (started by the same code as `langerhans kafka up`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from services.runtime.local_kafka import bootstrap_servers, kafka_up
from services.runtime.topics import TopicSpec, ensure_topics


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a broker that answers; starts the local one if it is not running."""
    if kafka_up() != 0:
        pytest.fail(f"Kafka at {bootstrap_servers()} is not available (see `langerhans kafka up`)")
    return bootstrap_servers()


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Create a topic (and its `.dlq`) with a name no other test uses."""

    def create(partitions: int = 3, prefix: str = "test") -> str:
        name = f"{prefix}.t{uuid.uuid4().hex[:12]}.v1"
        ensure_topics([TopicSpec(name, partitions, "test topic", replication=1)], kafka_bootstrap)
        return name

    return create


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until true; fail with `what` after `timeout_s` (every wait is bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
