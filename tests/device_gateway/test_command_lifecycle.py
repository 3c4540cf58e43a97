"""A command to a connected hub is stored and claimed in one transaction, and still leaves its
whole lifecycle behind: every transition recorded, every outcome published through the outbox.

Real device-gateway process, real Kafka, a real edge agent with its simulated pump.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2
from sqlalchemy import select

from services.runtime import outbox
from services.runtime.db import create_service_engine
from services.runtime.local_kafka import bootstrap_servers, kafka_up
from tests.device_gateway.harness import (
    AgentThread,
    clock_env,
    edge_settings,
    make_command,
    new_signer,
    send,
    start_gateway,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
S = device_pb2.PumpCommandState


def _published_outcomes(db: Path, command_id: str) -> dict[str, bool]:
    """Outcome events of one command in the gateway's outbox: event id → published yet."""
    engine = create_service_engine("device-gateway", f"sqlite:///{db}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(outbox.outbox_events.c.event_id, outbox.outbox_events.c.published_at).where(
                    outbox.outbox_events.c.event_id.like(f"{command_id}:%")
                )
            ).all()
    finally:
        engine.dispose()
    return {row.event_id: row.published_at is not None for row in rows}


def test_command_to_a_connected_hub_keeps_every_transition(tmp_path: Path) -> None:
    assert kafka_up() == 0
    signer, public = new_signer(tmp_path)
    clock = clock_env(1.0)
    db = tmp_path / "gateway.sqlite3"
    gw = start_gateway(
        tmp_path / "gw", kafka=bootstrap_servers(), public_key=public, clock=clock, db_path=db
    )
    hub = AgentThread(edge_settings(gw, tmp_path / "edge", clock), 5, "lifecycle")
    try:
        hub.start()
        assert hub.wait_connected(), gw.log_path.read_text()[-2000:]
        device, patient = hub.agent.identity.device_id, hub.agent.identity.patient_id
        command, signed = make_command(
            signer, device_id=device, patient_id=patient, sequence=1, now=hub.agent.clock.now(),
            rate_u_per_h=0.8, lifetime_s=120, automatic=False,
        )  # fmt: skip
        # claimed and written to the hub's stream before SendCommand returns
        assert send(gw, signed).state == S.PUMP_COMMAND_STATE_SENT

        deadline = time.monotonic() + 20
        wanted = {f"{command.command_id}:{state}" for state in (S.PUMP_COMMAND_STATE_QUEUED,
                  S.PUMP_COMMAND_STATE_SENT, S.PUMP_COMMAND_STATE_EXECUTED)}  # fmt: skip
        published = _published_outcomes(db, command.command_id)
        while time.monotonic() < deadline and not (
            wanted <= published.keys() and all(published[e] for e in wanted)
        ):
            time.sleep(0.2)
            published = _published_outcomes(db, command.command_id)
        assert wanted <= published.keys()
        assert all(published[e] for e in wanted), published  # the relay sent each to Kafka

        status = (
            gw.stub()
            .GetCommandStatus(gw_pb2.GetCommandStatusRequest(command_id=command.command_id))
            .status
        )
        assert status.state == S.PUMP_COMMAND_STATE_EXECUTED
        states = [t.state for t in status.transitions]
        assert states[:2] == [S.PUMP_COMMAND_STATE_QUEUED, S.PUMP_COMMAND_STATE_SENT]
        assert states[-1] == S.PUMP_COMMAND_STATE_EXECUTED
        assert states.count(S.PUMP_COMMAND_STATE_SENT) == 1  # claimed once, not re-offered
        assert hub.agent.executed_commands == [command.command_id]
        pump_rate = hub.hub.person.pump.status(hub.hub.person.t_min).temp_basal_u_per_h
        assert pump_rate == pytest.approx(0.8)
    finally:
        hub.close()
        gw.stop()
