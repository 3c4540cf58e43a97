"""Nothing stays UNCERTAIN once the hub has reported: real processes end to end.

A device-gateway process (mutual TLS, real Kafka), the edge agent as its own process
(`langerhans edge --devices`) and its simulated pump and CGM in a device process
(`edge.devsim`) whose pump acts but whose answers are lost. The agent is killed (SIGKILL)
while it waits for the pump's answer to command A; command C was claimed SENT by a replica
that died before writing it to the stream. Both expire and the gateway marks them UNCERTAIN.
When the agent restarts and reconnects, the gateway offers both again; the hub answers from
its own records: A was handed to the pump (its write-ahead record), so it stays uncertain on
the hub until pump history shows it — EXECUTED, once; C was never seen by the hub, so its own
checks refuse it — EXPIRED, provably never run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2
from sqlalchemy.orm import Session

from edge.client import load_identity
from edge.drivers.base import PumpEventKind
from edge.drivers.remote import DeviceLink, RemotePump
from edge.fleet import fleet_person_id
from services.device_gateway import repository
from services.runtime.db import create_service_engine
from services.runtime.local_kafka import bootstrap_servers, kafka_up
from tests.device_gateway.harness import (
    GatewayProcess,
    clock_env,
    free_port,
    make_command,
    new_signer,
    send,
    start_gateway,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
S = device_pb2.PumpCommandState
REPO_ROOT = Path(__file__).resolve().parents[2]


def _status(gw: GatewayProcess, command_id: str) -> gw_pb2.PumpCommandStatus:
    request = gw_pb2.GetCommandStatusRequest(command_id=command_id)
    return gw.stub().GetCommandStatus(request, timeout=5).status


def _wait_state(
    gw: GatewayProcess, command_id: str, state: int, timeout_s: float = 30.0
) -> gw_pb2.PumpCommandStatus:
    deadline = time.monotonic() + timeout_s
    status = _status(gw, command_id)
    while status.state != state and time.monotonic() < deadline:
        time.sleep(0.2)
        status = _status(gw, command_id)
    return status


def _hub_connected(gw: GatewayProcess, patient_id: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = gw.stub().GetLoopStatus(
            gw_pb2.GetLoopStatusRequest(patient_id=patient_id), timeout=5
        )
        if status.hub_connected:
            return True
        time.sleep(0.3)
    return False


def _temp_basals(socket_path: Path) -> list[float]:
    """Rates of the temp basals the (device process's) pump has started, from its history."""

    async def read() -> list[float]:
        link = DeviceLink(str(socket_path))
        try:
            history = await RemotePump(link).history_since(-1)
        finally:
            await link.aclose()
        return [e.amount_u for e in history if e.kind is PumpEventKind.TEMP_BASAL_STARTED]

    return asyncio.run(read())


def _force_sent(db_path: Path, command_id: str, replica: str) -> None:
    """What a replica leaves behind when it dies right after committing the SENT claim."""
    engine = create_service_engine("device-gateway", f"sqlite:///{db_path}")
    try:
        with Session(engine) as session, session.begin():
            now = datetime.now(UTC)
            repository.set_command_state(
                session, command_id, S.PUMP_COMMAND_STATE_SENT, now, delivered_by_replica=replica
            )
            repository.add_transition(
                session, command_id, S.PUMP_COMMAND_STATE_SENT, now, detail=replica
            )
    finally:
        engine.dispose()


def test_uncertain_commands_settle_when_the_killed_hub_returns(tmp_path: Path) -> None:
    assert kafka_up() == 0
    servers = bootstrap_servers()
    signer, public = new_signer(tmp_path)
    clock = clock_env(1.0)
    db = tmp_path / "gateway.sqlite3"
    ports = [free_port() for _ in range(3)]
    extra = {"LANGERHANS_IN_FLIGHT_GRACE_S": "1"}

    def gateway(name: str) -> GatewayProcess:
        return start_gateway(
            tmp_path / "gw", kafka=servers, public_key=public, clock=clock, replica=name,
            db_path=db, ports=ports, extra_env=extra,
        )  # fmt: skip

    gw = gateway("a")
    prefix = f"settle-{uuid.uuid4().hex[:6]}"
    patient_id = fleet_person_id(0, prefix)
    short = Path(tempfile.mkdtemp(prefix="settle-", dir="/tmp"))  # Unix socket paths are short
    socket_path = short / "devices.sock"
    env = {
        **os.environ,
        **clock,
        "LANGERHANS_GATEWAY_CA_PATH": str(gw.ca_path),
        "LANGERHANS_POLL_INTERVAL_S": "2",
        "LANGERHANS_LOG_JSON": "false",
    }
    devices = subprocess.Popen(
        [sys.executable, "-m", "edge.devsim", "--socket", str(socket_path), "--hub", "0",
         "--name-prefix", prefix, "--ack-loss", "1.0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    hub_cmd = [
        sys.executable, "-m", "edge.main", "--devices", str(socket_path),
        "--state-dir", str(tmp_path / "edge"), "--gateway", gw.service_addr,
        "--hub-addr", gw.hub_addr, "--enroll-addr", gw.enroll_addr,
    ]  # fmt: skip
    hub_log = (tmp_path / "hub.log").open("ab")
    hub: subprocess.Popen[bytes] | None = None

    def start_hub() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            hub_cmd, cwd=REPO_ROOT, env=env, stdout=hub_log, stderr=subprocess.STDOUT
        )

    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        hub = start_hub()
        assert _hub_connected(gw, patient_id), (tmp_path / "hub.log").read_text()[-3000:]
        identity = load_identity(tmp_path / "edge" / f"{prefix}-0000")
        assert identity is not None
        time.sleep(3)  # the hub has polled the pump (the gate needs its status)

        # A: reaches the pump, whose answer is lost; the hub is killed while it waits
        command_a, signed_a = make_command(
            signer, device_id=identity.device_id, patient_id=patient_id, sequence=1,
            now=datetime.now(UTC), rate_u_per_h=0.85, lifetime_s=8,
        )  # fmt: skip
        send(gw, signed_a)
        status = _wait_state(gw, command_a.command_id, S.PUMP_COMMAND_STATE_RECEIVED, 8)
        assert status.state == S.PUMP_COMMAND_STATE_RECEIVED
        time.sleep(0.5)
        hub.send_signal(signal.SIGKILL)
        hub.wait(10)
        assert _temp_basals(socket_path) == [pytest.approx(0.85)]  # the pump did run it

        # C: claimed SENT by a replica that died before writing it to the (dead) stream
        command_c, signed_c = make_command(
            signer, device_id=identity.device_id, patient_id=patient_id, sequence=2,
            now=datetime.now(UTC), rate_u_per_h=0.4, lifetime_s=5,
        )  # fmt: skip
        assert send(gw, signed_c).state == S.PUMP_COMMAND_STATE_QUEUED
        gw.stop()
        _force_sent(db, command_c.command_id, "replica-that-crashed")
        gw = gateway("b")

        # nobody can say what happened to either: after expiry + grace both are UNCERTAIN
        for command in (command_a, command_c):
            status = _wait_state(gw, command.command_id, S.PUMP_COMMAND_STATE_UNCERTAIN, 20)
            assert status.state == S.PUMP_COMMAND_STATE_UNCERTAIN

        # the hub comes back and reports: nothing stays uncertain
        hub = start_hub()
        assert _hub_connected(gw, patient_id), (tmp_path / "hub.log").read_text()[-3000:]
        status_c = _wait_state(gw, command_c.command_id, S.PUMP_COMMAND_STATE_EXPIRED)
        assert status_c.state == S.PUMP_COMMAND_STATE_EXPIRED, gw.log_path.read_text()[-2000:]
        assert "settled" not in status_c.transitions[-1].detail  # refused by the hub's checks
        status_a = _wait_state(gw, command_a.command_id, S.PUMP_COMMAND_STATE_EXECUTED)
        assert status_a.state == S.PUMP_COMMAND_STATE_EXECUTED, [
            (t.state, t.detail) for t in status_a.transitions
        ]
        assert "reconciled from pump history" in status_a.transitions[-1].detail
        # executed once: no second temp basal, and C never reached the pump
        assert _temp_basals(socket_path) == [pytest.approx(0.85)]
        # once settled, they stay settled
        time.sleep(3)
        assert _status(gw, command_a.command_id).state == S.PUMP_COMMAND_STATE_EXECUTED
        assert _status(gw, command_c.command_id).state == S.PUMP_COMMAND_STATE_EXPIRED
    finally:
        for proc in (hub, devices):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        hub_log.close()
        gw.stop()
        shutil.rmtree(short, ignore_errors=True)
