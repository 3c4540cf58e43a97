"""The dosing engine on the real broker: readings in → decisions and a signed command out;
replaying the same events (same and new event ids) sends no second command; readings that are
already older than 12 min when decided give no insulin increase."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as pb_grpc
from langerhans.dosing.v1 import dosing_pb2

from services.dosing_engine.main import DosingEngineSettings, run
from services.runtime.command_signing import (
    TrustedKeys,
    generate_signing_key,
    write_private_key,
)
from services.runtime.kafka.envelope import (
    Envelope,
    encode_headers,
    envelope_from_record,
    new_envelope,
)
from tests.dosing_engine.conftest import reading, settings_changed
from tests.runtime.conftest import wait_until

pytestmark = pytest.mark.kafka


@pytest.fixture
def service(
    make_topic: Callable[..., str], kafka_bootstrap: str, tmp_path: Path
) -> Iterator[tuple[DosingEngineSettings, TrustedKeys]]:
    signer = generate_signing_key()
    key_path = tmp_path / "signing.pem"
    write_private_key(signer, key_path)
    settings = DosingEngineSettings(
        readings_topic=make_topic(1, "cgmval"),
        pump_events_topic=make_topic(1, "pumpev"),
        settings_topic=make_topic(1, "therapy"),
        outcomes_topic=make_topic(1, "outcomes"),
        decisions_topic=make_topic(1, "decisions"),
        commands_topic=make_topic(1, "commands"),
        consumer_group=f"dosing-test-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp_path / 'dosing.sqlite3'}",
        kafka_bootstrap_servers=kafka_bootstrap,
        command_signing_key_path=key_path,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
    )
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    ports: list[int] = []

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def go() -> None:
            from services.runtime import grpc_server

            original = grpc_server.build_server

            def capture(*args, **kwargs):
                server = original(*args, **kwargs)
                ports.append(server.port)
                return server

            grpc_server.build_server = capture
            try:
                await run(settings, stop)
            finally:
                grpc_server.build_server = original

        loop.run_until_complete(go())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    wait_until(lambda: bool(ports), 30, "the gRPC server")
    settings.grpc_port = ports[0]
    yield settings, TrustedKeys([signer.public_key])
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    assert not thread.is_alive()


class _Bus:
    def __init__(self, bootstrap: str, settings: DosingEngineSettings) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.settings = settings
        self.consumer = KafkaConsumer(
            settings.decisions_topic, settings.commands_topic,
            bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex[:8]}", consumer_timeout_ms=200,
        )  # fmt: skip
        self.decisions: list[dosing_pb2.DosingDecision] = []
        self.commands: list[Envelope] = []

    def send(self, topic: str, key: str, message: Message, event_id: str | None = None) -> Envelope:
        env = new_envelope(key, message, source="test", time=datetime.now(UTC), event_id=event_id)
        self.resend(topic, env)
        return env

    def resend(self, topic: str, env: Envelope) -> None:
        self.producer.send(topic, key=env.key.encode(), value=env.data, headers=encode_headers(env))
        self.producer.flush()

    def poll(self) -> None:
        for batch in self.consumer.poll(timeout_ms=200).values():
            for record in batch:
                env = envelope_from_record(record)
                if record.topic == self.settings.decisions_topic:
                    self.decisions.append(env.parse(dosing_pb2.DosingDecision))
                else:
                    self.commands.append(env)

    def decisions_for(self, patient: str) -> list[dosing_pb2.DosingDecision]:
        self.poll()
        return [d for d in self.decisions if d.patient_id == patient]


def _wait_settings(port: int, patient: str) -> None:
    async def ask() -> bool:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = await pb_grpc.DosingEngineServiceStub(channel).GetLoopStatus(
                pb.GetLoopStatusRequest(patient_id=patient)
            )
        return common_pb2.LOOP_STATUS_REASON_NO_SETTINGS not in status.reasons

    wait_until(lambda: asyncio.run(ask()), 120, f"settings of {patient} to be stored")


def test_readings_in_decisions_and_one_signed_command_out_replay_safe(
    service: tuple[DosingEngineSettings, TrustedKeys], kafka_bootstrap: str
) -> None:
    settings, keys = service
    bus = _Bus(kafka_bootstrap, settings)
    patient, sentinel = f"p-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    for pid in (patient, sentinel):
        bus.send(settings.settings_topic, pid,
                 settings_changed(pid, common_pb2.LOOP_MODE_CLOSED_LOOP_TEMP_BASAL))  # fmt: skip
        _wait_settings(settings.grpc_port, pid)
    now = datetime.now(UTC).replace(microsecond=0)
    # a backlog after an outage: 3 h rising to ~240 mg/dL, every reading ≥ 15 min old on arrival
    backlog = [
        reading(patient, now - timedelta(minutes=5 * (35 - i)), 140.0 + 3.0 * i) for i in range(33)
    ]
    sent = [bus.send(settings.readings_topic, patient, r, event_id=r.reading_id) for r in backlog]
    wait_until(lambda: len(bus.decisions_for(patient)) == len(backlog), 60, "33 decisions")
    stale = bus.decisions_for(patient)
    assert all(
        any(r.code == dosing_pb2.DOSING_REASON_CODE_STALE_CGM for r in d.reasons) for d in stale
    )
    assert not any(d.enacted for d in stale)  # no catch-up doses from the backlog
    # then the live reading
    live = reading(patient, datetime.now(UTC), 250.0)
    sent.append(bus.send(settings.readings_topic, patient, live, event_id=live.reading_id))
    history = [*backlog, live]
    wait_until(lambda: len(bus.decisions_for(patient)) == len(history), 60, "the live decision")
    fresh = bus.decisions_for(patient)[-1]
    assert fresh.reading_id == live.reading_id
    assert fresh.enacted
    assert fresh.recommendation.set_temp_basal.rate_u_per_h > 0.8  # above the scheduled basal
    wait_until(lambda: bool(bus.decisions_for(patient) and bus.commands), 30, "the command")
    assert len(bus.commands) == 1
    command = keys.verify(bus.commands[0].data)  # verifies with the public key
    assert command.patient_id == patient
    assert command.device_id == "hub-1"
    assert command.decision_id == fresh.decision_id
    assert command.origin == device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC
    assert command.set_temp_basal.rate_u_per_h == fresh.recommendation.set_temp_basal.rate_u_per_h
    assert command.expires_at.seconds - command.issued_at.seconds == 60

    # replay: the same records again, then the same readings under new event ids
    for env in sent:
        bus.resend(settings.readings_topic, env)
    for r in history[-3:]:
        bus.send(settings.readings_topic, patient, r, event_id=uuid.uuid4().hex)
    # a later record on the same partition: once decided, the replay was handled
    marker = reading(sentinel, datetime.now(UTC), 120.0, device_id="hub-2")
    bus.send(settings.readings_topic, sentinel, marker)
    wait_until(lambda: len(bus.decisions_for(sentinel)) == 1, 60, "the sentinel's decision")
    time.sleep(1.0)
    bus.poll()
    assert len(bus.decisions_for(patient)) == len(history)
    assert len([c for c in bus.commands if c.key == patient]) == 1
    bus.consumer.close()
    bus.producer.close()
