"""Commands left at SENT by a gateway that crashed between marking them SENT and writing them
to the hub's stream: re-offered on the next stream, executed exactly once; a re-offer of a
command the hub already ran is not run again but answered with its settled state (EXECUTED);
a command nobody confirmed after its expiry becomes UNCERTAIN, never EXPIRED.

Real processes: device-gateway subprocesses on loopback, the real Kafka broker, the gateway's
SQLite file; the hub is a full edge agent with a simulated pump in this process.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2
from sqlalchemy.orm import Session

from services.device_gateway import repository
from services.runtime.db import create_service_engine
from services.runtime.local_kafka import bootstrap_servers, kafka_up
from tests.device_gateway.harness import (
    AgentThread,
    GatewayProcess,
    clock_env,
    edge_settings,
    free_port,
    make_command,
    new_signer,
    send,
    start_gateway,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
S = device_pb2.PumpCommandState
R = device_pb2.PumpCommandRejectionReason


def _status(gw: GatewayProcess, command_id: str) -> gw_pb2.PumpCommandStatus:
    request = gw_pb2.GetCommandStatusRequest(command_id=command_id)
    return gw.stub().GetCommandStatus(request, timeout=5).status


def _wait_state(
    gw: GatewayProcess, command_id: str, state: int, timeout_s: float = 20.0
) -> gw_pb2.PumpCommandStatus:
    deadline = time.monotonic() + timeout_s
    status = _status(gw, command_id)
    while status.state != state and time.monotonic() < deadline:
        time.sleep(0.2)
        status = _status(gw, command_id)
    return status


def _force_sent(db_url: str, command_id: str, replica: str) -> None:
    """What a replica leaves behind when it dies right after committing the SENT claim."""
    engine = create_service_engine("device-gateway", db_url)
    try:
        with Session(engine) as session, session.begin():
            row = repository.get_command(session, command_id)
            assert row is not None
            now = row.expires_at - timedelta(seconds=250)
            repository.set_command_state(
                session, command_id, S.PUMP_COMMAND_STATE_SENT, now, delivered_by_replica=replica
            )
            repository.add_transition(
                session, command_id, S.PUMP_COMMAND_STATE_SENT, now, detail=replica
            )
    finally:
        engine.dispose()


def test_sent_but_never_written_is_reoffered_and_executed_once(tmp_path: Path) -> None:
    assert kafka_up() == 0
    servers = bootstrap_servers()
    signer, public = new_signer(tmp_path)
    clock = clock_env(1.0)
    db = tmp_path / "gateway.sqlite3"
    db_url = f"sqlite:///{db}"
    ports = [free_port() for _ in range(3)]

    def gateway(name: str) -> GatewayProcess:
        return start_gateway(
            tmp_path / "gw", kafka=servers, public_key=public, clock=clock, replica=name,
            db_path=db, ports=ports,
        )  # fmt: skip

    gw = gateway("a")
    hub = AgentThread(edge_settings(gw, tmp_path / "edge", clock), 3, "recovery")
    try:
        device, patient = hub.agent.identity.device_id, hub.agent.identity.patient_id
        # the hub is not connected yet: the command waits QUEUED in the shared table
        command, signed = make_command(
            signer, device_id=device, patient_id=patient, sequence=1, now=hub.agent.clock.now(),
            rate_u_per_h=0.65, lifetime_s=300, automatic=False,
        )  # fmt: skip
        assert send(gw, signed).state == S.PUMP_COMMAND_STATE_QUEUED
        gw.stop()
        _force_sent(db_url, command.command_id, "replica-that-crashed")

        gw = gateway("b")
        hub.start()
        assert hub.wait_connected(), gw.log_path.read_text()[-2000:]
        status = _wait_state(gw, command.command_id, S.PUMP_COMMAND_STATE_EXECUTED)
        assert status.state == S.PUMP_COMMAND_STATE_EXECUTED
        assert hub.agent.executed_commands == [command.command_id]
        pump_rate = hub.hub.person.pump.status(hub.hub.person.t_min).temp_basal_u_per_h
        assert pump_rate == pytest.approx(0.65)
        sent = [t.detail for t in status.transitions if t.state == S.PUMP_COMMAND_STATE_SENT]
        assert sent[0] == "replica-that-crashed"
        assert sent[1].startswith(f"re-offered by {gw.replica_id}")

        # --- the worst case: the hub lost its command cursor and the command is back at SENT
        # (a replica died after claiming it again). The gateway offers it on the next stream;
        # the hub's persisted dedupe refuses to run it again and answers with what it knows:
        # executed. No second dose, and nothing left in doubt.
        hub.agent._last_command_sequence = 0  # a hub whose cursors.json was lost
        gw.stop()
        _force_sent(db_url, command.command_id, "replica-that-crashed-again")
        gw = gateway("c")
        status = _wait_state(gw, command.command_id, S.PUMP_COMMAND_STATE_EXECUTED, 30)
        assert status.state == S.PUMP_COMMAND_STATE_EXECUTED, gw.log_path.read_text()[-2000:]
        assert status.transitions[-1].detail.startswith("settled on a re-offered copy")
        assert hub.agent.executed_commands == [command.command_id]
        assert not any(
            t.rejection_reason == R.PUMP_COMMAND_REJECTION_REASON_DUPLICATE
            for t in status.transitions
        )
    finally:
        hub.close()
        gw.stop()


def test_in_flight_without_outcome_after_expiry_becomes_uncertain(tmp_path: Path) -> None:
    assert kafka_up() == 0
    servers = bootstrap_servers()
    signer, public = new_signer(tmp_path)
    clock = clock_env(1.0)
    db = tmp_path / "gateway.sqlite3"
    gw = start_gateway(
        tmp_path / "gw", kafka=servers, public_key=public, clock=clock, db_path=db,
        extra_env={"LANGERHANS_IN_FLIGHT_GRACE_S": "1"},
    )  # fmt: skip
    hub = AgentThread(edge_settings(gw, tmp_path / "edge", clock), 4, "uncertain")
    try:
        device, patient = hub.agent.identity.device_id, hub.agent.identity.patient_id
        command, signed = make_command(
            signer, device_id=device, patient_id=patient, sequence=1, now=hub.agent.clock.now(),
            lifetime_s=3,
        )  # fmt: skip
        assert send(gw, signed).state == S.PUMP_COMMAND_STATE_QUEUED
        _force_sent(f"sqlite:///{db}", command.command_id, "replica-that-crashed")
        # the hub never connects; expiry (3 s) + grace (1 s) later the gateway cannot tell
        # whether the pump ran it: UNCERTAIN, not EXPIRED (which would claim it never ran)
        status = _wait_state(gw, command.command_id, S.PUMP_COMMAND_STATE_UNCERTAIN, 15)
        assert status.state == S.PUMP_COMMAND_STATE_UNCERTAIN
        assert hub.agent.executed_commands == []
    finally:
        hub.close()
        gw.stop()
