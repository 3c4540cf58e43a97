"""dosing-engine on Kafka: the one handler for its four input topics and the outgoing events.

The only module of the service that knows topics. The handler changes storage and writes the
decision and the signed commands into the outbox in the runner's transaction (together with
the processed-event record); it never commits or publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import therapy_pb2
from langerhans.device.v1 import device_pb2
from langerhans.pump.v1 import pump_pb2
from sqlalchemy.orm import Session

from kernels.increase_margin import DEFAULT_INCREASE_MARGIN_IOB_FRACTION, check_iob_fraction
from services.dosing_engine.metrics import record_decision
from services.dosing_engine.repository import Repository
from services.dosing_engine.service import DosingEngine, ReadingOutcome
from services.runtime import outbox
from services.runtime.clock import Clock
from services.runtime.command_signing import CommandSigner
from services.runtime.kafka.envelope import Envelope

__all__ = [
    "COMMANDS_TOPIC",
    "DECISIONS_TOPIC",
    "INPUT_TOPICS",
    "OUTCOMES_TOPIC",
    "PUMP_EVENTS_TOPIC",
    "READINGS_TOPIC",
    "SETTINGS_TOPIC",
    "SOURCE",
    "handle",
    "make_handler",
    "publish_reading_outcome",
]

log = logging.getLogger(__name__)

READINGS_TOPIC: Final = "cgm.readings.v1"
PUMP_EVENTS_TOPIC: Final = "pump.events.v1"
SETTINGS_TOPIC: Final = "therapy.settings.v1"
OUTCOMES_TOPIC: Final = "pump.command_outcomes.v1"
DECISIONS_TOPIC: Final = "dosing.decisions.v1"
COMMANDS_TOPIC: Final = "pump.commands.v1"
INPUT_TOPICS: Final = (READINGS_TOPIC, PUMP_EVENTS_TOPIC, SETTINGS_TOPIC, OUTCOMES_TOPIC)
SOURCE: Final = "langerhans/dosing-engine"


def publish_reading_outcome(
    session: Session,
    outcome: ReadingOutcome,
    clock: Clock,
    *,
    decisions_topic: str = DECISIONS_TOPIC,
    commands_topic: str = COMMANDS_TOPIC,
) -> None:
    """Decision and its commands into the outbox (event ids: decision id, command id)."""
    if outcome.decision is None:
        return
    d = outcome.decision
    outbox.add(
        session,
        decisions_topic,
        d.patient_id,
        d,
        source=SOURCE,
        clock=clock,
        event_id=d.decision_id,
    )
    # Counted when staged; a rolled-back transaction is redelivered and counted again, which
    # a rate panel tolerates.
    record_decision(d)
    for signed, command_id in zip(outcome.commands, d.command_ids, strict=True):
        outbox.add(
            session,
            commands_topic,
            d.patient_id,
            signed,
            source=SOURCE,
            clock=clock,
            event_id=command_id,
        )


def handle(
    envelope: Envelope,
    session: Session,
    clock: Clock,
    signer: CommandSigner,
    *,
    decisions_topic: str = DECISIONS_TOPIC,
    commands_topic: str = COMMANDS_TOPIC,
    increase_margin_iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
) -> None:
    """One event of any input topic, dispatched on its CloudEvents type."""
    engine = DosingEngine(
        Repository(session),
        clock,
        signer,
        increase_margin_iob_fraction=increase_margin_iob_fraction,
    )
    kind = envelope.event_type
    # a payload that does not parse raises MalformedEventError: the runner dead-letters it
    if kind == cgm_pb2.CgmReading.DESCRIPTOR.full_name:
        outcome = engine.on_reading(envelope.parse(cgm_pb2.CgmReading))
        publish_reading_outcome(
            session, outcome, clock, decisions_topic=decisions_topic, commands_topic=commands_topic
        )
    elif kind == pump_pb2.PumpEvent.DESCRIPTOR.full_name:
        engine.on_pump_event(envelope.parse(pump_pb2.PumpEvent))
    elif kind == therapy_pb2.TherapySettingsChanged.DESCRIPTOR.full_name:
        engine.on_settings(envelope.parse(therapy_pb2.TherapySettingsChanged))
    elif kind == device_pb2.PumpCommandOutcome.DESCRIPTOR.full_name:
        engine.on_outcome(envelope.parse(device_pb2.PumpCommandOutcome))
    else:
        log.warning("ignoring event of type %s on %s", kind, envelope.topic)


def make_handler(
    clock: Clock,
    signer: CommandSigner,
    *,
    decisions_topic: str = DECISIONS_TOPIC,
    commands_topic: str = COMMANDS_TOPIC,
    increase_margin_iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
) -> Callable[[Envelope, Session], None]:
    check_iob_fraction(increase_margin_iob_fraction)

    def handler(envelope: Envelope, session: Session) -> None:
        handle(
            envelope,
            session,
            clock,
            signer,
            decisions_topic=decisions_topic,
            commands_topic=commands_topic,
            increase_margin_iob_fraction=increase_margin_iob_fraction,
        )

    return handler
