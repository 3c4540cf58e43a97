"""Every Kafka topic of Langerhans, declared once, and the idempotent reconciler.

Each topic is keyed by patient id so that one person's events stay in order on one
partition; scaling out is adding partitions (never removing them: that would reorder keys)
and consumer replicas. Each topic has a dead-letter twin `<topic>.dlq` for records a consumer
could not handle. `langerhans topics` (and `langerhans kafka up`) creates missing topics,
grows partition counts and brings topic configs to the declared values.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "DLQ_SUFFIX",
    "TOPICS",
    "TopicSpec",
    "declared_topics",
    "dlq_topic",
    "ensure_topics",
    "reconcile_topics",
    "reconcile_topics_command",
    "topic_by_name",
    "with_dead_letters",
]

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Production clusters run three replicas with two in sync; a single local broker gets one.
DEFAULT_REPLICATION = 3
DEFAULT_MIN_INSYNC = 2
DLQ_RETENTION_MS = 30 * DAY_MS

CleanupPolicy = Literal["delete", "compact", "compact,delete"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partitions, replication and retention. Key = patient id."""

    name: str
    partitions: int
    description: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: CleanupPolicy = "delete"
    replication: int = DEFAULT_REPLICATION
    extra_configs: dict[str, str] = field(default_factory=dict)
    key: str = "patient_id"
    min_insync_replicas: int = DEFAULT_MIN_INSYNC
    dlq_partitions: int = 1

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"{self.name}: partitions must be ≥ 1, got {self.partitions}")
        if self.replication < 1:
            raise ValueError(f"{self.name}: replication must be ≥ 1, got {self.replication}")
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise ValueError(f"{self.name}: retention_ms must be -1 (forever) or positive")

    def configs(self, replication: int) -> dict[str, str]:
        """Topic-level configs to enforce on a cluster where the topic has `replication`."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(max(1, min(self.min_insync_replicas, replication - 1))),
            **self.extra_configs,
        }

    def dead_letters(self) -> TopicSpec:
        return TopicSpec(
            name=dlq_topic(self.name),
            partitions=self.dlq_partitions,
            description=f"records from {self.name} that could not be handled",
            retention_ms=DLQ_RETENTION_MS,
            replication=self.replication,
            min_insync_replicas=self.min_insync_replicas,
        )


def dlq_topic(topic: str) -> str:
    """`cgm.readings.v1` -> `cgm.readings.v1.dlq`."""
    return topic + DLQ_SUFFIX


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "device.telemetry.v1",
        12,
        "everything an edge agent streams up (batches of CGM, pump and hub status)",
    ),
    TopicSpec("cgm.readings.raw.v1", 12, "CGM readings as received, before validation"),
    TopicSpec(
        "cgm.readings.v1",
        12,
        "validated, calibrated, deduplicated CGM readings (mg/dL)",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "cgm.events.v1", 6, "CGM gaps, sensor faults, warm-up and expiry", retention_ms=30 * DAY_MS
    ),
    TopicSpec(
        "pump.events.v1",
        12,
        "delivered boluses and basal, reservoir, occlusion, suspend/resume",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "dosing.decisions.v1",
        12,
        "each dosing-engine decision with its inputs and limits applied",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "pump.commands.v1",
        12,
        "signed commands to a pump (carry their own expiry; stale ones are refused)",
    ),
    TopicSpec(
        "pump.command_outcomes.v1",
        12,
        "acknowledgement, rejection or timeout of each pump command",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec("alerts.v1", 6, "raised, escalated, acknowledged, resolved alerts", 30 * DAY_MS),
    TopicSpec(
        "alerts.deliveries.v1", 6, "each delivery attempt of an alert to a person", 30 * DAY_MS
    ),
    TopicSpec(
        "therapy.settings.v1",
        6,
        "current therapy settings per patient (compacted: the latest version per key)",
        retention_ms=-1,
        cleanup_policy="compact",
        extra_configs={"min.compaction.lag.ms": str(HOUR_MS)},
    ),
)


def declared_topics(environ: dict[str, str] | None = None) -> tuple[TopicSpec, ...]:
    """`TOPICS` with the deployment's overrides (the Helm topic job sets these):
    `LANGERHANS_TOPIC_PARTITIONS` (JSON map name -> partitions), `LANGERHANS_TOPIC_REPLICATION`,
    `LANGERHANS_TOPIC_MIN_INSYNC_REPLICAS`, `LANGERHANS_TOPIC_DLQ_PARTITIONS`."""
    env = os.environ if environ is None else environ
    partitions: dict[str, int] = {}
    if raw := env.get("LANGERHANS_TOPIC_PARTITIONS", "").strip():
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("LANGERHANS_TOPIC_PARTITIONS must be a JSON object name -> count")
        unknown = set(parsed) - {spec.name for spec in TOPICS}
        if unknown:
            raise ValueError(f"LANGERHANS_TOPIC_PARTITIONS names undeclared topics: {unknown}")
        partitions = {str(name): int(count) for name, count in parsed.items()}

    def number(variable: str) -> int | None:
        raw_value = env.get(variable, "").strip()
        return int(raw_value) if raw_value else None

    replication = number("LANGERHANS_TOPIC_REPLICATION")
    min_insync = number("LANGERHANS_TOPIC_MIN_INSYNC_REPLICAS")
    dlq_partitions = number("LANGERHANS_TOPIC_DLQ_PARTITIONS")
    return tuple(
        replace(
            spec,
            partitions=partitions.get(spec.name, spec.partitions),
            replication=spec.replication if replication is None else replication,
            min_insync_replicas=spec.min_insync_replicas if min_insync is None else min_insync,
            dlq_partitions=spec.dlq_partitions if dlq_partitions is None else dlq_partitions,
        )
        for spec in TOPICS
    )


def with_dead_letters(specs: Iterable[TopicSpec]) -> list[TopicSpec]:
    """Each spec followed by its `.dlq` twin."""
    result: list[TopicSpec] = []
    for spec in specs:
        result.append(spec)
        if not spec.name.endswith(DLQ_SUFFIX):
            result.append(spec.dead_letters())
    return result


def topic_by_name(name: str) -> TopicSpec:
    for spec in with_dead_letters(TOPICS):
        if spec.name == name:
            return spec
    raise KeyError(f"no declared topic {name!r}")


def _admin(bootstrap_servers: str) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="langerhans-topics",
        request_timeout_ms=30_000,
    )


def reconcile_topics(
    specs: Sequence[TopicSpec], bootstrap_servers: str, *, admin: Any | None = None
) -> list[str]:
    """Create missing topics, add partitions, enforce configs; return what was changed."""
    from kafka.admin import ConfigResource, ConfigResourceType

    own_admin = admin is None
    admin = admin or _admin(bootstrap_servers)
    changes: list[str] = []
    try:
        brokers = len(admin.describe_cluster()["brokers"])
        names = [spec.name for spec in specs]
        existing = {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics(names)
            if t.get("error_code", 0) == 0
        }
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            new_topics = {}
            for spec in missing:
                replication = min(spec.replication, brokers)
                new_topics[spec.name] = {
                    "num_partitions": spec.partitions,
                    "replication_factor": replication,
                    "configs": spec.configs(replication),
                }
            result = admin.create_topics(new_topics, raise_errors=False, wait_for_metadata=False)
            for topic in result["topics"]:
                code = topic.get("error_code", 0)
                # 36 = TOPIC_ALREADY_EXISTS: someone else created it meanwhile; fine.
                if code not in (0, 36):
                    raise RuntimeError(f"creating {topic['name']}: {topic.get('error_message')}")
                if code == 0:
                    changes.append(f"created {topic['name']}")
            admin.wait_for_topics([spec.name for spec in missing], timeout_ms=30_000)

        grow = {
            spec.name: spec.partitions
            for spec in specs
            if spec.name in existing and existing[spec.name] < spec.partitions
        }
        if grow:
            admin.create_partitions(grow)
            changes += [f"{name}: partitions {existing[name]} -> {n}" for name, n in grow.items()]
        for spec in specs:
            if spec.name in existing and existing[spec.name] > spec.partitions:
                log.warning(
                    "%s has %d partitions, declared %d; partitions are never removed",
                    spec.name,
                    existing[spec.name],
                    spec.partitions,
                )

        present = [spec for spec in specs if spec.name in existing]
        if present:
            resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
            described = admin.describe_configs(resources, config_filter="all")["topic"]
            to_alter = []
            for spec in present:
                current = described.get(spec.name, {})
                replication = min(spec.replication, brokers)
                wanted = spec.configs(replication)
                diff = {
                    key: value
                    for key, value in wanted.items()
                    if current.get(key, {}).get("value") != value
                }
                if diff:
                    to_alter.append(ConfigResource(ConfigResourceType.TOPIC, spec.name, diff))
                    changes += [f"{spec.name}: {k}={v}" for k, v in diff.items()]
            if to_alter:
                outcome = admin.alter_configs(to_alter)
                for name, status in outcome.get("topic", {}).items():
                    if status != "OK":
                        raise RuntimeError(f"altering configs of {name}: {status}")
    finally:
        if own_admin:
            admin.close()
    return changes


def ensure_topics(specs: Sequence[TopicSpec], bootstrap_servers: str | None = None) -> list[str]:
    """Reconcile `specs` and their dead-letter twins (used by tests, benchmarks and services)."""
    from services.runtime.local_kafka import bootstrap_servers as configured

    return reconcile_topics(with_dead_letters(specs), bootstrap_servers or configured())


def reconcile_topics_command(quiet: bool = False) -> int:
    """Entry point of `langerhans topics`: reconcile every declared topic and its `.dlq`."""
    from services.runtime.local_kafka import bootstrap_servers

    servers = bootstrap_servers()
    try:
        specs = with_dead_letters(declared_topics())
    except ValueError as exc:
        print(f"topics: invalid topic overrides: {exc}", file=sys.stderr)
        return 2
    try:
        changes = reconcile_topics(specs, servers)
    except Exception as exc:
        print(f"topics: could not reconcile topics at {servers}: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(f"topics: {change}")
    if not quiet or changes:
        print(f"topics: {len(specs)} topics in place at {servers} ({len(changes)} changes)")
    return 0
