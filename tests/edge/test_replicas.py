"""Two device-gateway replicas sharing one database and the real Kafka broker: a hub holds its
stream on replica B, the dosing side calls SendCommand on replica A, and the command reaches
the hub through pump.commands.v1 and is executed exactly once; the lifecycle names replica B
as the sender.

Shared database: the SQLite file both processes open, or PostgreSQL when TEST_POSTGRES_URL is
set (schema device_gateway there).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2

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


def test_command_sent_to_replica_a_reaches_the_hub_on_replica_b(tmp_path: Path) -> None:
    assert kafka_up() == 0
    servers = bootstrap_servers()
    signer, public = new_signer(tmp_path)
    clock = clock_env(1.0)
    db = tmp_path / "shared.sqlite3"
    extra: dict[str, str] = {}
    postgres = os.environ.get("TEST_POSTGRES_URL")
    if postgres:
        # schema device_gateway in that database; device ids are unique per run
        extra = {"DATABASE_URL": postgres}
    ca = tmp_path / "ca"  # one platform CA for both replicas
    replica_a = start_gateway(
        tmp_path / "a", kafka=servers, public_key=public, clock=clock, replica="a",
        db_path=db, ca_dir=ca, extra_env=extra,
    )  # fmt: skip
    replica_b = start_gateway(
        tmp_path / "b", kafka=servers, public_key=public, clock=clock, replica="b",
        db_path=db, ca_dir=ca, extra_env=extra,
    )  # fmt: skip
    # A name of its own per run: on a shared PostgreSQL the gateway's schema outlives the test.
    hub = AgentThread(
        edge_settings(replica_b, tmp_path / "edge", clock), 5, f"replicas-{uuid.uuid4().hex[:8]}"
    )
    try:
        hub.start()
        assert hub.wait_connected(), replica_b.log_path.read_text()[-2000:]
        device, patient = hub.agent.identity.device_id, hub.agent.identity.patient_id
        # the device row says where the stream is
        listed = replica_a.stub().ListDevices(
            gw_pb2.ListDevicesRequest(patient_id=patient), timeout=5
        )
        assert [d.device_id for d in listed.devices] == [device]

        command, signed = make_command(
            signer, device_id=device, patient_id=patient, sequence=1, now=hub.agent.clock.now(),
            rate_u_per_h=0.4, lifetime_s=300, automatic=False,
        )  # fmt: skip
        started = time.monotonic()
        assert send(replica_a, signed).state == S.PUMP_COMMAND_STATE_QUEUED  # A has no stream
        status = None
        while time.monotonic() - started < 30:
            status = (
                replica_a.stub()
                .GetCommandStatus(
                    gw_pb2.GetCommandStatusRequest(command_id=command.command_id), timeout=5
                )
                .status
            )
            if status.state == S.PUMP_COMMAND_STATE_EXECUTED:
                break
            time.sleep(0.1)
        elapsed_s = time.monotonic() - started
        assert status is not None
        assert status.state == S.PUMP_COMMAND_STATE_EXECUTED, replica_b.log_path.read_text()[-3000:]
        sent = [t for t in status.transitions if t.state == S.PUMP_COMMAND_STATE_SENT]
        assert [t.detail for t in sent] == [replica_b.replica_id]  # sent once, by B
        assert hub.agent.executed_commands == [command.command_id]
        pump = hub.hub.person.pump.status(hub.hub.person.t_min)
        assert pump.temp_basal_u_per_h == pytest.approx(0.4)
        print(f"\nSendCommand on A → executed via B in {elapsed_s:.2f} s")

        # the same command sent again (to either replica) is a duplicate and goes nowhere
        again = send(replica_b, signed)
        assert again.duplicate
        time.sleep(2)
        assert hub.agent.executed_commands == [command.command_id]
    finally:
        hub.close()
        replica_a.stop()
        replica_b.stop()
