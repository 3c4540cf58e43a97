"""Feeds the live-stream hub from Kafka: readings, decisions, alert changes, command outcomes.

Every gateway replica (and every uvicorn worker) reads every partition from the end, with no
consumer group and no offset commits: the stream is live only (history comes from the REST
API), and each replica must see the events of whoever is connected to it. A thread polls and
hands events to the hub on the event loop (`publish_threadsafe`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from langerhans.alerts.v1 import alerts_pb2
from langerhans.cgm.v1 import cgm_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2

from gateway.alerts.service import alert_out
from gateway.clients.convert import enum_name, to_time
from gateway.clients.glucose_source import reading_from_proto
from gateway.stream.hub import StreamHub
from services.runtime.kafka.envelope import MalformedEventError, envelope_from_record

__all__ = ["TOPICS", "KafkaFeed", "event_for"]

log = logging.getLogger(__name__)

READINGS = "cgm.readings.v1"
DECISIONS = "dosing.decisions.v1"
ALERTS = "alerts.v1"
OUTCOMES = "pump.command_outcomes.v1"
TOPICS = (READINGS, DECISIONS, ALERTS, OUTCOMES)


def _reading(data: bytes) -> tuple[str, str, dict[str, Any]]:
    msg = cgm_pb2.CgmReading.FromString(data)
    return msg.patient_id, "reading", reading_from_proto(msg).__dict__


def _decision(data: bytes) -> tuple[str, str, dict[str, Any]]:
    d = dosing_pb2.DosingDecision.FromString(data)
    return (
        d.patient_id,
        "decision",
        {
            "decision_id": d.decision_id,
            "decided_at": to_time(d.decided_at),
            "glucose_mg_dl": d.glucose_mg_dl,
            "iob_u": d.iob_u,
            "cob_g": d.cob_g,
            "eventual_glucose_mg_dl": d.eventual_glucose_mg_dl,
            "enacted": d.enacted,
            "reasons": [
                enum_name(dosing_pb2.DosingReasonCode, r.code, "DOSING_REASON_CODE_")
                for r in d.reasons
            ],
        },
    )


def _alert(data: bytes) -> tuple[str, str, dict[str, Any]]:
    change = alerts_pb2.AlertStateChanged.FromString(data)
    return change.alert.patient_id, "alert", alert_out(change.alert).model_dump()


def _outcome(data: bytes) -> tuple[str, str, dict[str, Any]]:
    o = device_pb2.PumpCommandOutcome.FromString(data)
    return (
        o.patient_id,
        "loop_status",
        {
            "command_id": o.command_id,
            "state": enum_name(device_pb2.PumpCommandState, o.state, "PUMP_COMMAND_STATE_"),
            "delivered_insulin_u": o.delivered_insulin_u,
            "detail": o.detail,
            "occurred_at": to_time(o.occurred_at),
        },
    )


_BY_TOPIC: dict[str, Callable[[bytes], tuple[str, str, dict[str, Any]]]] = {
    READINGS: _reading,
    DECISIONS: _decision,
    ALERTS: _alert,
    OUTCOMES: _outcome,
}


def event_for(topic: str, data: bytes) -> tuple[str, str, dict[str, Any]] | None:
    """(person id, stream event type, data) for a consumed record, or None to skip it."""
    handler = _BY_TOPIC.get(topic)
    if handler is None:
        return None
    return handler(data)


class KafkaFeed:
    def __init__(self, hub: StreamHub, bootstrap_servers: str) -> None:
        self._hub = hub
        self._bootstrap = bootstrap_servers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                client_id="gateway-stream",
                # A live feed: a fetch is answered at most 100 ms after it was sent even when
                # the broker's wake-up on new data is missed (default 500 ms). Costs ~1 % of a
                # core per worker more than the default when idle (50 ms: ~2.5 %).
                fetch_max_wait_ms=100,
            )
        except Exception:
            log.exception("live stream: cannot reach Kafka; the stream carries no events")
            return
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in TOPICS
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            consumer.seek_to_end()
            for tp in partitions:
                consumer.position(tp)  # resolve "end" now, so events after start are seen
            self.ready.set()
            while not self._stop.is_set():
                for tp, records in consumer.poll(timeout_ms=100, max_records=1000).items():
                    for record in records:
                        self._handle(tp.topic, record)
        finally:
            consumer.close()

    def _handle(self, topic: str, record: Any) -> None:
        try:
            envelope = envelope_from_record(record)
            event = event_for(topic, envelope.data)
        except (MalformedEventError, ValueError) as exc:
            log.warning("live stream: skipped a record", extra={"topic": topic, "error": str(exc)})
            return
        if event is not None and event[0]:
            self._hub.publish_threadsafe(*event)
