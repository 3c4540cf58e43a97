"""The declared topic list and the idempotent reconciler (against the real broker)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from services.runtime.topics import (
    DAY_MS,
    TOPICS,
    TopicSpec,
    dlq_topic,
    reconcile_topics,
    topic_by_name,
    with_dead_letters,
)

REQUIRED = {
    "device.telemetry.v1",
    "cgm.readings.raw.v1",
    "cgm.readings.v1",
    "cgm.events.v1",
    "pump.events.v1",
    "dosing.decisions.v1",
    "pump.commands.v1",
    "pump.command_outcomes.v1",
    "alerts.v1",
    "alerts.deliveries.v1",
    "therapy.settings.v1",
}


def test_every_topic_of_the_architecture_is_declared_once() -> None:
    names = [spec.name for spec in TOPICS]
    assert len(names) == len(set(names))
    assert set(names) == REQUIRED


def test_names_follow_dataset_data_version() -> None:
    for spec in TOPICS:
        assert re.fullmatch(r"[a-z]+(\.[a-z_]+)*\.v\d+", spec.name), spec.name
        assert spec.key == "patient_id"


def test_each_topic_has_a_dead_letter_twin() -> None:
    names = {spec.name for spec in with_dead_letters(TOPICS)}
    assert names == REQUIRED | {dlq_topic(name) for name in REQUIRED}
    assert topic_by_name("alerts.v1.dlq").partitions == 1


def test_replication_and_min_insync_follow_the_cluster() -> None:
    spec = topic_by_name("cgm.readings.v1")
    assert spec.configs(replication=3)["min.insync.replicas"] == "2"
    assert spec.configs(replication=1)["min.insync.replicas"] == "1"


@pytest.mark.parametrize(
    "kwargs", [{"partitions": 0}, {"replication": 0}, {"retention_ms": 0}, {"retention_ms": -5}]
)
def test_invalid_specs_are_refused(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"name": "x.y.v1", "partitions": 1, "description": "d"}
    with pytest.raises(ValueError, match=r"x\.y\.v1"):
        TopicSpec(**{**base, **kwargs})


def _describe(admin: Any, name: str) -> tuple[int, dict[str, str]]:
    topic = admin.describe_topics([name])[0]
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all"
    )["topic"][name]
    return len(topic["partitions"]), {k: v["value"] for k, v in configs.items()}


@pytest.mark.kafka
def test_reconcile_creates_grows_and_updates_idempotently(kafka_bootstrap: str) -> None:
    name = f"test.reconcile{uuid.uuid4().hex[:10]}.v1"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        first = TopicSpec(name, 2, "d", retention_ms=DAY_MS)
        assert reconcile_topics([first], kafka_bootstrap) == [f"created {name}"]
        partitions, configs = _describe(admin, name)
        assert partitions == 2
        assert configs["retention.ms"] == str(DAY_MS)
        assert configs["cleanup.policy"] == "delete"

        assert reconcile_topics([first], kafka_bootstrap) == []  # nothing to do

        grown = TopicSpec(name, 5, "d", retention_ms=3 * DAY_MS, cleanup_policy="compact")
        changes = reconcile_topics([grown], kafka_bootstrap)
        assert f"{name}: partitions 2 -> 5" in changes
        partitions, configs = _describe(admin, name)
        assert partitions == 5
        assert configs["retention.ms"] == str(3 * DAY_MS)
        assert configs["cleanup.policy"] == "compact"

        # Fewer declared partitions never shrink a topic (that would move keys).
        assert (
            reconcile_topics([TopicSpec(name, 1, "d", 3 * DAY_MS, "compact")], kafka_bootstrap)
            == []
        )
        assert _describe(admin, name)[0] == 5
    finally:
        admin.delete_topics([name], raise_errors=False)
        admin.close()


@pytest.mark.kafka
def test_declared_topics_exist_after_kafka_up(kafka_bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    assert {spec.name for spec in with_dead_letters(TOPICS)} <= existing


def test_deployment_overrides_change_partitions_replication_and_dlq() -> None:
    from services.runtime.topics import declared_topics

    specs = {
        spec.name: spec
        for spec in declared_topics(
            {
                "LANGERHANS_TOPIC_PARTITIONS": '{"cgm.readings.v1": 48}',
                "LANGERHANS_TOPIC_REPLICATION": "5",
                "LANGERHANS_TOPIC_MIN_INSYNC_REPLICAS": "3",
                "LANGERHANS_TOPIC_DLQ_PARTITIONS": "2",
            }
        )
    }
    readings = specs["cgm.readings.v1"]
    assert readings.partitions == 48
    assert readings.replication == 5
    assert readings.configs(5)["min.insync.replicas"] == "3"
    assert readings.dead_letters().partitions == 2
    assert specs["alerts.v1"].partitions == 6  # not overridden


def test_overrides_naming_an_undeclared_topic_are_refused() -> None:
    import pytest

    from services.runtime.topics import declared_topics

    with pytest.raises(ValueError, match="undeclared"):
        declared_topics({"LANGERHANS_TOPIC_PARTITIONS": '{"cgm.readngs.v1": 48}'})
