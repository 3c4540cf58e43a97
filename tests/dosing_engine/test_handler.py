"""The dosing-engine handler on fakes (fixed clock, throwaway key, SQLite file): what reaches the
outbox for readings, replays, stale data, modes and uncertain delivery."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.message import Message
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.dosing_engine.events import COMMANDS_TOPIC, DECISIONS_TOPIC, handle
from services.dosing_engine.model import to_timestamp, ts_seconds
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner, TrustedKeys
from services.runtime.kafka.envelope import new_envelope
from services.runtime.outbox import outbox_events
from tests.dosing_engine.conftest import START, reading, rising_history, settings_changed

P = "patient-1"


def _send(sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner,
          message: Message) -> None:  # fmt: skip
    envelope = new_envelope(P, message, source="test", time=clock.now())
    with sessions() as session, session.begin():
        handle(envelope, session, clock, signer)


def _outbox(sessions: sessionmaker[Session], topic: str) -> list[bytes]:
    with sessions() as session:
        rows = session.execute(
            select(outbox_events.c.payload).where(outbox_events.c.topic == topic)
            .order_by(outbox_events.c.id)
        )  # fmt: skip
        return [bytes(r[0]) for r in rows]


def _commands(
    sessions: sessionmaker[Session], signer: CommandSigner
) -> list[device_pb2.PumpCommand]:
    keys = TrustedKeys([signer.public_key])
    return [keys.verify(p) for p in _outbox(sessions, COMMANDS_TOPIC)]


def _feed(sessions, clock, signer, mode=common_pb2.LOOP_MODE_CLOSED_LOOP_SMB, n=36):
    _send(sessions, clock, signer, settings_changed(P, mode))
    history = rising_history(P, START, n)
    for r in history:
        clock.current = r.measured_at.ToDatetime().replace(tzinfo=START.tzinfo)
        _send(sessions, clock, signer, r)
    return history


def test_rising_glucose_gives_a_decision_and_signed_commands(sessions, clock, signer) -> None:
    _feed(sessions, clock, signer)
    decisions = [
        dosing_pb2.DosingDecision.FromString(p) for p in _outbox(sessions, DECISIONS_TOPIC)
    ]
    assert len(decisions) == 36  # one per reading
    last = decisions[-1]
    assert last.glucose_mg_dl > 240
    # the increase margin may hold a single step right after a micro-bolus (IOB up), not all
    assert any(
        d.recommendation.HasField("micro_bolus") or d.recommendation.HasField("set_temp_basal")
        for d in decisions[-3:]
    )
    commands = _commands(sessions, signer)
    assert commands, "a closed loop facing a rising 250 mg/dL must act"
    assert any(c.HasField("deliver_bolus") and c.deliver_bolus.automatic for c in commands)
    for c in commands:
        assert ts_seconds(c.expires_at) - ts_seconds(c.issued_at) == 60.0
        assert c.origin == device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC
        assert c.device_id == "hub-1"
        assert c.decision_id
    sequences = [c.sequence for c in commands]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)
    # never above the limits of the settings (max bolus 8, max basal 3, max IOB 6)
    assert all(c.deliver_bolus.insulin_u <= 4.0 for c in commands if c.HasField("deliver_bolus"))
    assert all(
        c.set_temp_basal.rate_u_per_h <= 3.0 for c in commands if c.HasField("set_temp_basal")
    )


def test_replaying_the_same_readings_sends_no_second_command(sessions, clock, signer) -> None:
    history = _feed(sessions, clock, signer)
    before_cmd = _commands(sessions, signer)
    before_dec = _outbox(sessions, DECISIONS_TOPIC)
    for r in history[-6:]:  # a redelivery that slipped past the consumer's dedupe
        _send(sessions, clock, signer, r)
    assert len(_commands(sessions, signer)) == len(before_cmd)
    assert len(_outbox(sessions, DECISIONS_TOPIC)) == len(before_dec)


def test_a_reading_older_than_12_min_never_raises_insulin(sessions, clock, signer) -> None:
    _send(sessions, clock, signer, settings_changed(P))
    history = rising_history(P, START)
    clock.current = START + timedelta(minutes=13)  # a backlog after an outage arrives now
    for r in history:
        _send(sessions, clock, signer, r)
    for c in _commands(sessions, signer):
        assert not c.HasField("deliver_bolus")
        if c.HasField("set_temp_basal"):
            assert c.set_temp_basal.rate_u_per_h <= 0.8  # scheduled basal
    decisions = [
        dosing_pb2.DosingDecision.FromString(p) for p in _outbox(sessions, DECISIONS_TOPIC)
    ]
    assert decisions
    assert all(
        any(r.code == dosing_pb2.DOSING_REASON_CODE_STALE_CGM for r in d.reasons) for d in decisions
    )


def test_open_loop_recommends_but_sends_nothing(sessions, clock, signer) -> None:
    _feed(sessions, clock, signer, mode=common_pb2.LOOP_MODE_OPEN_LOOP)
    decisions = [
        dosing_pb2.DosingDecision.FromString(p) for p in _outbox(sessions, DECISIONS_TOPIC)
    ]
    assert decisions
    assert not any(d.enacted for d in decisions)
    assert _commands(sessions, signer) == []


def test_temp_basal_mode_never_sends_a_micro_bolus(sessions, clock, signer) -> None:
    _feed(sessions, clock, signer, mode=common_pb2.LOOP_MODE_CLOSED_LOOP_TEMP_BASAL)
    commands = _commands(sessions, signer)
    assert commands
    assert not any(c.HasField("deliver_bolus") for c in commands)


def test_uncertain_delivery_stops_automatic_dosing(sessions, clock, signer) -> None:
    history = _feed(sessions, clock, signer, n=30)
    first = _commands(sessions, signer)
    assert first
    outcome = device_pb2.PumpCommandOutcome(
        command_id=first[-1].command_id, patient_id=P, device_id="hub-1",
        state=device_pb2.PUMP_COMMAND_STATE_UNCERTAIN,
    )  # fmt: skip
    _send(sessions, clock, signer, outcome)
    last = history[-1]
    for i in range(1, 7):  # still rising: without the uncertain command the loop would act
        t = START + timedelta(minutes=5 * i)
        clock.current = t
        _send(sessions, clock, signer, reading(P, t, last.glucose_mg_dl + 4.0 * i))
    assert len(_commands(sessions, signer)) == len(first)


def test_pump_history_becomes_insulin_on_board(sessions, clock, signer) -> None:
    from langerhans.pump.v1 import pump_pb2

    from tests.dosing_engine.conftest import pump_event

    _send(sessions, clock, signer, settings_changed(P, common_pb2.LOOP_MODE_OPEN_LOOP))
    t0 = START - timedelta(minutes=30)
    started = pump_pb2.BolusStarted(bolus_id="b1", programmed_insulin_u=3.0)
    _send(sessions, clock, signer, pump_event(P, t0, bolus_started=started))
    delivered = pump_pb2.BolusDelivered(bolus_id="b1", programmed_insulin_u=3.0,
                                        delivered_insulin_u=2.0)  # fmt: skip
    delivered.started_at.CopyFrom(to_timestamp(t0.timestamp()))
    _send(
        sessions, clock, signer, pump_event(P, t0 + timedelta(minutes=2), bolus_delivered=delivered)
    )
    _send(sessions, clock, signer, reading(P, START, 120.0))
    decision = dosing_pb2.DosingDecision.FromString(_outbox(sessions, DECISIONS_TOPIC)[-1])
    # what the pump delivered (2 U, 30 min ago), not what was programmed
    assert 1.6 < decision.iob_u < 2.0
