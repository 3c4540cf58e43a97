"""Therapy settings on Kafka: the gateway owns the settings and announces every new version.

`announce` writes `TherapySettingsChanged` (the complete settings, key = person id) into the
gateway's outbox in the caller's transaction, so a version is published if and only if it
was committed. `OutboxPublisher` runs the shared outbox relay in a thread of the gateway
process and keeps retrying while the broker is unreachable.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.common.v1 import common_pb2, therapy_pb2
from sqlalchemy.orm import Session, sessionmaker

from gateway.models import TherapySettingsVersion
from gateway.therapy.schemas import TherapySettings
from services.runtime import outbox
from services.runtime.clock import Clock

__all__ = [
    "SETTINGS_TOPIC",
    "SOURCE",
    "OutboxPublisher",
    "announce",
    "settings_changed_event",
    "settings_event_id",
]

log = logging.getLogger(__name__)

SETTINGS_TOPIC: Final = "therapy.settings.v1"
SOURCE: Final = "langerhans/gateway"
# Duration of insulin action the engine assumes for rapid-acting analogues, minutes.
INSULIN_DURATION_MIN: Final = 360
_EVENT_NAMESPACE = uuid.UUID("6f1c2d0e-33c5-4c64-9d55-0b7a3c9e4a11")

_AGE: Final = {
    "child": common_pb2.AGE_GROUP_CHILD,
    "teen": common_pb2.AGE_GROUP_TEEN,
    "adult": common_pb2.AGE_GROUP_ADULT,
    "resistant": common_pb2.AGE_GROUP_RESISTANT,
    "pregnant": common_pb2.AGE_GROUP_PREGNANT,
}
_LOOP_MODE: Final = {
    "open_loop": common_pb2.LOOP_MODE_OPEN_LOOP,
    "low_glucose_suspend": common_pb2.LOOP_MODE_LOW_GLUCOSE_SUSPEND,
    "closed_loop_temp_basal": common_pb2.LOOP_MODE_CLOSED_LOOP_TEMP_BASAL,
    "closed_loop_smb": common_pb2.LOOP_MODE_CLOSED_LOOP_SMB,
}


def settings_event_id(person_id: str, version: int) -> str:
    """One event per settings version: a re-announcement carries the same CloudEvents id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{person_id}|{version}"))


def settings_changed_event(row: TherapySettingsVersion) -> therapy_pb2.TherapySettingsChanged:
    """A stored settings version → the contract the dosing engine and alerts consume."""
    doc = TherapySettings.model_validate(row.settings)
    changed_at = Timestamp()
    changed_at.FromDatetime(row.changed_at)
    settings = therapy_pb2.TherapySettings(
        patient_id=row.person_id,
        version=row.version,
        effective_at=changed_at,
        time_zone=doc.time_zone,
        basal_schedule=[
            therapy_pb2.BasalSegment(start_min=s.start_min, rate_u_per_h=s.rate_u_per_h)
            for s in doc.basal_schedule
        ],
        carb_ratio_schedule=[
            therapy_pb2.CarbRatioSegment(start_min=s.start_min, carb_ratio_g_per_u=s.carbs_g_per_u)
            for s in doc.carb_ratios
        ],
        sensitivity_schedule=[
            therapy_pb2.SensitivitySegment(start_min=s.start_min, isf_mg_dl_per_u=s.isf_mg_dl_per_u)
            for s in doc.sensitivities
        ],
        target_schedule=[
            therapy_pb2.TargetRangeSegment(
                start_min=s.start_min, low_mg_dl=s.low_mg_dl, high_mg_dl=s.high_mg_dl
            )
            for s in doc.targets
        ],
        max_basal_rate_u_per_h=doc.max_basal_u_per_h,
        max_bolus_u=doc.max_bolus_u,
        max_iob_u=doc.max_iob_u,
        insulin_type=(
            common_pb2.INSULIN_TYPE_RAPID_ACTING_CHILD
            if doc.age_group == "child"
            else common_pb2.INSULIN_TYPE_RAPID_ACTING
        ),
        insulin_duration_min=INSULIN_DURATION_MIN,
        age_group=_AGE[doc.age_group],
        loop_mode=_LOOP_MODE[doc.loop_mode],
    )
    return therapy_pb2.TherapySettingsChanged(
        settings=settings, changed_by=row.changed_by, changed_at=changed_at, reason=row.reason
    )


def announce(session: Session, clock: Clock, row: TherapySettingsVersion) -> None:
    """Queue the new version for therapy.settings.v1 in the caller's transaction."""
    outbox.add(
        session,
        SETTINGS_TOPIC,
        row.person_id,
        settings_changed_event(row),
        source=SOURCE,
        clock=clock,
        event_id=settings_event_id(row.person_id, row.version),
    )


class OutboxPublisher:
    """The outbox relay in a background thread; waits for the broker instead of failing."""

    def __init__(
        self, bootstrap_servers: str, session_factory: sessionmaker[Session], clock: Clock
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._sessions = session_factory
        self._clock = clock
        self._stop = threading.Event()
        self._relay: outbox.OutboxRelay | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from services.runtime.kafka.producer import EventProducer

        while not self._stop.is_set():
            try:
                producer = EventProducer(self._bootstrap_servers, source=SOURCE, clock=self._clock)
                break
            except Exception as exc:  # broker not reachable yet: settings wait in the outbox
                log.warning("outbox: Kafka not reachable (%s); retrying in 5 s", exc)
                self._stop.wait(5.0)
        else:
            return
        relay = outbox.OutboxRelay(self._sessions, producer, clock=self._clock, poll_interval_s=0.5)
        self._relay = relay
        if self._stop.is_set():
            producer.close()
            return
        try:
            relay.run()
        finally:
            producer.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._relay is not None:
            self._relay.stop(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
