"""Shared helpers: a device-gateway subprocess on free loopback ports, signed test commands."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc
from langerhans.device.v1 import device_pb2

from edge.fleet import SimulatedHub, build_simulated_hub
from edge.settings import EdgeSettings
from services.device_gateway.pki import ensure_device_ca
from services.runtime.command_signing import CommandSigner, generate_signing_key, write_public_key
from services.runtime.settings import REPO_ROOT

__all__ = [
    "AgentThread",
    "GatewayProcess",
    "clock_env",
    "edge_settings",
    "free_port",
    "make_command",
    "new_signer",
    "start_gateway",
]


T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clock_env(speed: float) -> dict[str, str]:
    now = time.time()
    return {
        "LANGERHANS_CLOCK_SPEED": str(speed),
        "LANGERHANS_CLOCK_SIM_START": datetime.fromtimestamp(now).astimezone().isoformat(),
        "LANGERHANS_CLOCK_REAL_START_EPOCH_S": repr(now),
    }


def new_signer(directory: Path) -> tuple[CommandSigner, Path]:
    signer = generate_signing_key()
    path = directory / "command.pub"
    write_public_key(signer.public_key, path)
    return signer, path


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    service_addr: str
    hub_addr: str
    enroll_addr: str
    ca_path: Path
    log_path: Path
    replica_id: str

    def stub(self) -> gw_grpc.DeviceGatewayServiceStub:
        return gw_grpc.DeviceGatewayServiceStub(grpc.insecure_channel(self.service_addr))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_gateway(
    directory: Path,
    *,
    kafka: str,
    public_key: Path,
    clock: dict[str, str],
    replica: str = "a",
    db_path: Path | None = None,
    ca_dir: Path | None = None,
    ports: list[int] | None = None,
    extra_env: dict[str, str] | None = None,
) -> GatewayProcess:
    """A device-gateway process with its own SQLite file, CA and ports; waits until it serves."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_dir = ca_dir or directory
    ensure_device_ca(ca_dir).issue_server_certificate(ca_dir, ["localhost", "127.0.0.1"])
    ports = ports or [free_port() for _ in range(3)]
    env = {
        **os.environ,
        **clock,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": f"sqlite:///{db_path or directory / 'gateway.sqlite3'}",
        "LANGERHANS_GRPC_PORT": str(ports[0]),
        "LANGERHANS_HUB_PORT": str(ports[1]),
        "LANGERHANS_ENROLL_PORT": str(ports[2]),
        "LANGERHANS_REPLICA_ID": f"replica-{replica}-{uuid.uuid4().hex[:6]}",
        "LANGERHANS_COMMAND_PUBLIC_KEY_PATHS": json.dumps([str(public_key)]),
        "LANGERHANS_DEVICE_CA_CERT_PATH": str(ca_dir / "ca.pem"),
        "LANGERHANS_DEVICE_CA_KEY_PATH": str(ca_dir / "ca-key.pem"),
        "LANGERHANS_CLOUD_HEARTBEAT_INTERVAL_S": "1",
        "LANGERHANS_LOG_JSON": "false",
        "LANGERHANS_HUB_TLS_CERT_PATH": str(ca_dir / "gateway.pem"),
        "LANGERHANS_HUB_TLS_KEY_PATH": str(ca_dir / "gateway-key.pem"),
        **(extra_env or {}),
    }
    log_path = directory / f"gateway-{replica}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "device-gateway"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gw = GatewayProcess(
        process,
        f"127.0.0.1:{ports[0]}",
        f"127.0.0.1:{ports[1]}",
        f"127.0.0.1:{ports[2]}",
        ca_dir / "ca.pem",
        log_path,
        env["LANGERHANS_REPLICA_ID"],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {log_path.read_text()[-3000:]}")
        try:
            with (
                socket.create_connection(("127.0.0.1", ports[1]), timeout=0.2),
                socket.create_connection(("127.0.0.1", ports[0]), timeout=0.2),
            ):
                return gw
        except OSError:
            time.sleep(0.2)
    gw.stop()
    raise RuntimeError("gateway did not start in 60 s")


def edge_settings(
    gw: GatewayProcess, state_root: Path, clock: dict[str, str], **overrides: object
) -> EdgeSettings:
    """Edge settings pointing at `gw`, on the same (possibly accelerated) clock."""
    return EdgeSettings(
        device_gateway_addr=gw.service_addr,
        hub_addr=gw.hub_addr,
        enroll_addr=gw.enroll_addr,
        gateway_ca_path=gw.ca_path,
        state_root=state_root,
        clock_speed=float(clock["LANGERHANS_CLOCK_SPEED"]),
        clock_sim_start=datetime.fromisoformat(clock["LANGERHANS_CLOCK_SIM_START"]),
        clock_real_start_epoch_s=float(clock["LANGERHANS_CLOCK_REAL_START_EPOCH_S"]),
        **overrides,  # type: ignore[arg-type]
    )


class AgentThread:
    """A simulated hub (edge agent) running on its own event loop in a thread."""

    def __init__(self, settings: EdgeSettings, index: int, name_prefix: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.hub: SimulatedHub = self.loop.run_until_complete(
            build_simulated_hub(settings, index, name_prefix=name_prefix)
        )
        self.agent = self.hub.agent
        self._stop = asyncio.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.agent.run(self._stop),), daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def wait_connected(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.agent.link.connected:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self.agent.close()
        self.loop.close()


def make_command(
    signer: CommandSigner,
    *,
    device_id: str,
    patient_id: str,
    sequence: int,
    now: datetime,
    rate_u_per_h: float = 1.2,
    lifetime_s: float = 60.0,
    automatic: bool = True,
) -> tuple[device_pb2.PumpCommand, device_pb2.SignedPumpCommand]:
    command = device_pb2.PumpCommand(
        command_id=str(uuid.uuid4()),
        patient_id=patient_id,
        device_id=device_id,
        sequence=sequence,
        origin=device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC
        if automatic
        else device_pb2.PUMP_COMMAND_ORIGIN_MANUAL,
        issued_by="test",
        set_temp_basal=device_pb2.SetTempBasal(rate_u_per_h=rate_u_per_h, duration_min=30),
    )
    command.issued_at.FromDatetime(now)
    command.expires_at.FromDatetime(now + timedelta(seconds=lifetime_s))
    return command, signer.sign(command)


def send(gw: GatewayProcess, signed: device_pb2.SignedPumpCommand) -> gw_pb2.SendCommandResponse:
    response: gw_pb2.SendCommandResponse = gw.stub().SendCommand(
        gw_pb2.SendCommandRequest(signed_command=signed), timeout=10
    )
    return response
