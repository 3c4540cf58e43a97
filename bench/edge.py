"""Edge benchmark: one edge agent's footprint, and one device-gateway holding many hub streams.

1. *Agent*: one `langerhans edge --devices` process (real clock) enrolled with and streaming to
   a device-gateway process; its simulated pump and CGM run in a device process of their own
   (`edge.devsim`, over a Unix socket), as a real pump and sensor are outside the hub. After
   a warm-up, resident memory and CPU (share of one core) are sampled from /proc for
   `--agent-seconds`.
2. *Streams*: `--streams` lightweight hubs in `--client-procs` separate processes (grpc.aio),
   each with its **own** EC P-256 key and client certificate from the gateway's device CA,
   so every stream is a distinct mutual-TLS identity checked by the gateway, connecting at
   `--connect-rate` hubs per second in total (default a storm: 1,000/s). The certificates
   are pre-generated and the device rows inserted straight into the gateway's database: the
   enrolment RPCs are not part of the measurement. Once every stream is welcomed, each client
   process sends signed commands through SendCommand (service port) at `--rate` per second in
   total; its hub receives the command on its stream and answers with an EXECUTED outcome; the
   round trip ends when the gateway acknowledges that outcome (it acknowledges only after the
   outcome is committed). The lightweight hubs neither verify nor execute: that is the agent's
   job, measured in part 1.

    python -m bench.edge [--agent-seconds 60] [--streams 2000] [--client-procs 2] [--rate 20]
                         [--connect-rate 1000]

Ends with `RESULT edge rss_mb=<n> cpu_pct=<x> streams=<m> cmd_p99_ms=<y>`; plot at
var/bench/edge.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_PERSON = "bench-hub-person-0000"  # not one of the platform's simulated people
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- /proc sampling
def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_KB / 1024


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------- lightweight hubs
def _client_inputs(args: argparse.Namespace) -> tuple[list[dict[str, str]], bytes, Any]:
    from services.runtime.command_signing import load_signer

    hubs = json.loads(Path(args.hubs_file).read_text())
    return hubs, Path(args.ca).read_bytes(), load_signer(Path(args.signing_key))


async def _hub_client(args: argparse.Namespace) -> None:
    """One client process: its share of the hubs, then its share of the commands."""
    import grpc
    from grpc import aio
    from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
    from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc
    from langerhans.device.v1 import device_pb2

    hubs, ca_pem, signer = _client_inputs(args)
    failures: dict[str, int] = {}
    pending: dict[str, tuple[float, asyncio.Future[float]]] = {}
    queues: dict[str, asyncio.Queue[gw_pb2.ConnectRequest | None]] = {}
    live: set[str] = set()  # device ids whose stream is open
    stop = asyncio.Event()
    all_welcomed = asyncio.Event()

    async def session(entry: dict[str, str], credentials: grpc.ChannelCredentials) -> None:
        device_id = entry["device_id"]
        queue: asyncio.Queue[gw_pb2.ConnectRequest | None] = asyncio.Queue()
        queues[device_id] = queue
        sequence = 0
        outcome_of: dict[int, str] = {}

        async def requests() -> AsyncIterator[gw_pb2.ConnectRequest]:
            while (item := await queue.get()) is not None:
                yield item

        queue.put_nowait(
            gw_pb2.ConnectRequest(hub_sequence=0, hello=gw_pb2.HubHello(device_id=device_id))
        )
        options = [("grpc.keepalive_time_ms", 60_000)]
        async with aio.secure_channel(args.hub_addr, credentials, options=options) as ch:
            call = gw_grpc.DeviceGatewayServiceStub(ch).Connect(requests())
            try:
                async for response in call:
                    kind = response.WhichOneof("payload")
                    if kind == "welcome":
                        live.add(device_id)
                        sequence = response.welcome.acked_hub_sequence
                        if len(live) == len(hubs):
                            all_welcomed.set()
                    elif kind == "signed_command":
                        command = device_pb2.PumpCommand.FromString(response.signed_command.command)
                        sequence += 1
                        outcome_of[sequence] = command.command_id
                        queue.put_nowait(
                            gw_pb2.ConnectRequest(
                                hub_sequence=sequence,
                                command_outcome=device_pb2.PumpCommandOutcome(
                                    command_id=command.command_id,
                                    device_id=device_id,
                                    patient_id=entry["patient_id"],
                                    sequence=command.sequence,
                                    state=device_pb2.PUMP_COMMAND_STATE_EXECUTED,
                                ),
                            )
                        )
                    elif kind == "telemetry_ack":
                        acked = response.telemetry_ack.hub_sequence
                        for seq in [s for s in outcome_of if s <= acked]:
                            started = pending.pop(outcome_of.pop(seq), None)
                            if started is not None and not started[1].done():
                                started[1].set_result(time.monotonic() - started[0])
            finally:
                # End the request generator from inside whatever ended the call. A failed
                # session used to leave it suspended in queue.get(); the reconnect replaced the
                # queue, the generator was collected while still running and the loop's
                # finalizer printed "aclose(): asynchronous generator is already running".
                queue.put_nowait(None)

    async def hub(entry: dict[str, str]) -> None:
        """Like a real hub: keep the stream up, reconnect with a short backoff."""
        device_id = entry["device_id"]
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_pem,
            private_key=entry["key"].encode(),
            certificate_chain=entry["cert"].encode(),
        )
        while not stop.is_set():
            try:
                await session(entry, credentials)
            except aio.AioRpcError as exc:
                if stop.is_set():
                    return
                phase = "after welcome" if device_id in live else "before welcome"
                failures[f"{exc.code().name} {phase}: {exc.details()}"] = (
                    failures.get(f"{exc.code().name} {phase}: {exc.details()}", 0) + 1
                )
            live.discard(device_id)
            await asyncio.sleep(random.uniform(1.0, 3.0))

    # Pace this process's share at `connect_rate`. The default (1,000/s in total) is a storm,
    # all hubs back at once after a gateway restart; a real fleet spreads out more.
    tasks = []
    next_at = time.monotonic()
    for entry in hubs:
        tasks.append(asyncio.create_task(hub(entry)))
        next_at += 1.0 / args.connect_rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_welcomed.wait(), args.connect_timeout_s)
    print(
        json.dumps({"event": "connected", "welcomed": len(live), "failures": failures}),
        flush=True,
    )
    failures.clear()

    # wait for the go signal (the parent checks the gateway side first)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    rtts_s: list[float] = []
    lost = 0
    sequences: dict[str, int] = {}
    async with aio.insecure_channel(args.service_addr) as channel:
        stub = gw_grpc.DeviceGatewayServiceStub(channel)
        rng = random.Random(args.seed)
        interval_s = 1.0 / args.rate
        deadline = time.monotonic() + args.command_seconds
        futures: list[asyncio.Future[float]] = []

        async def one(entry: dict[str, str]) -> None:
            device_id = entry["device_id"]
            sequences[device_id] = sequences.get(device_id, 0) + 1
            now = dt.datetime.now(dt.UTC)
            command = device_pb2.PumpCommand(
                command_id=str(uuid.uuid4()),
                patient_id=entry["patient_id"],
                device_id=device_id,
                sequence=sequences[device_id],
                origin=device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC,
                issued_by="bench",
                set_temp_basal=device_pb2.SetTempBasal(rate_u_per_h=0.5, duration_min=30),
            )
            command.issued_at.FromDatetime(now)
            command.expires_at.FromDatetime(now + dt.timedelta(seconds=60))
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            futures.append(future)
            pending[command.command_id] = (time.monotonic(), future)
            await stub.SendCommand(
                gw_pb2.SendCommandRequest(signed_command=signer.sign(command)), timeout=30
            )

        by_id = {h["device_id"]: h for h in hubs}
        sends = []
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            sends.append(asyncio.create_task(one(by_id[rng.choice(sorted(live))])))
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*sends, return_exceptions=True)
        if futures:
            await asyncio.wait(futures, timeout=15)
        for future in futures:
            if future.done():
                rtts_s.append(future.result())
            else:
                lost += 1
    print(
        json.dumps(
            {
                "event": "commands",
                "rtt_ms": [r * 1000 for r in rtts_s],
                "lost": lost,
                "held": len(live),
                "failures": failures,
            }
        ),
        flush=True,
    )
    stop.set()
    for queue in queues.values():
        queue.put_nowait(None)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------- orchestration
class Gateway:
    def __init__(self, work: Path, kafka: str, public_key: Path) -> None:
        from services.device_gateway.pki import ensure_device_ca

        self.ca = ensure_device_ca(work / "ca")
        self.ca.issue_server_certificate(work / "ca", ["localhost", "127.0.0.1"])
        self.ports = [_free_port() for _ in range(3)]
        self.db = work / "gateway.sqlite3"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "LANGERHANS_GRPC_PORT": str(self.ports[0]),
            "LANGERHANS_HUB_PORT": str(self.ports[1]),
            "LANGERHANS_ENROLL_PORT": str(self.ports[2]),
            "LANGERHANS_REPLICA_ID": "bench-edge",
            "LANGERHANS_COMMAND_PUBLIC_KEY_PATHS": json.dumps([str(public_key)]),
            "LANGERHANS_DEVICE_CA_CERT_PATH": str(work / "ca" / "ca.pem"),
            "LANGERHANS_DEVICE_CA_KEY_PATH": str(work / "ca" / "ca-key.pem"),
            "LANGERHANS_HUB_TLS_CERT_PATH": str(work / "ca" / "gateway.pem"),
            "LANGERHANS_HUB_TLS_KEY_PATH": str(work / "ca" / "gateway-key.pem"),
            "LANGERHANS_METRICS_PORT": "0",
            "LANGERHANS_LOG_LEVEL": "WARNING",
        }
        self.log_path = work / "gateway.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", "device-gateway"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_fd_limit,  # noqa: PLW1509 - only setrlimit, no threads yet
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-3000:])
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.ports[0]), 0.2),
                    socket.create_connection(("127.0.0.1", self.ports[1]), 0.2),
                ):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("device-gateway did not start")

    @property
    def service_addr(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def hub_addr(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    @property
    def enroll_addr(self) -> str:
        return f"127.0.0.1:{self.ports[2]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _measure_agent(args: argparse.Namespace, gw: Gateway, work: Path) -> dict[str, Any]:
    import grpc
    from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
    from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc

    env = {
        **os.environ,
        "LANGERHANS_GATEWAY_CA_PATH": str(gw.ca.cert_path),
        "LANGERHANS_LOG_LEVEL": "WARNING",
        "LANGERHANS_METRICS_PORT": "0",
    }
    # The simulated person, pump and sensor run in a device process of their own (as a real
    # pump and sensor are not in the hub's process); the hub reaches them over a Unix socket.
    socket_path = work / "devices.sock"
    devices_log = (work / "devices.log").open("wb")
    devices = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.devsim",
            "--socket",
            str(socket_path),
            "--hub",
            "0",
            "--name-prefix",
            "bench-hub",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=devices_log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        if devices.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("device process: " + (work / "devices.log").read_text()[-2000:])
        time.sleep(0.2)
    hub_cmd = [
        sys.executable,
        "-m",
        "edge.main",
        "--devices",
        str(socket_path),
        "--state-dir",
        str(work / "edge"),
        "--gateway",
        gw.service_addr,
        "--hub-addr",
        gw.hub_addr,
        "--enroll-addr",
        gw.enroll_addr,
    ]
    log_path = work / "agent.log"
    # Enrolment (X.509, CSR) happens once in a hub's life; the measured agent is a hub that
    # starts already enrolled, as after any restart.
    with log_path.open("wb") as log:
        enrolled = subprocess.run(
            [*hub_cmd, "--enroll-only"], check=False, cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
    if enrolled.returncode != 0:
        devices.terminate()
        raise RuntimeError("enrolment failed: " + log_path.read_text()[-3000:])
    with log_path.open("ab") as log:
        agent = subprocess.Popen(
            hub_cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    stub = gw_grpc.DeviceGatewayServiceStub(grpc.insecure_channel(gw.service_addr))
    try:
        deadline = time.monotonic() + 60
        connected = False
        while time.monotonic() < deadline and not connected:
            time.sleep(0.5)
            if agent.poll() is not None:
                raise RuntimeError(log_path.read_text()[-3000:])
            status = stub.GetLoopStatus(
                gw_pb2.GetLoopStatusRequest(patient_id=BENCH_PERSON), timeout=5
            )
            connected = status.hub_connected
        if not connected:
            raise RuntimeError("the edge agent did not connect: " + log_path.read_text()[-2000:])
        print(f"agent: connected; warming up {args.agent_warmup_s:.0f} s", flush=True)
        time.sleep(args.agent_warmup_s)
        samples: list[tuple[float, float, float]] = []  # (t, rss_mb, cpu_pct)
        t0, cpu0 = time.monotonic(), _cpu_s(agent.pid)
        last_t, last_cpu = t0, cpu0
        while (now := time.monotonic()) - t0 < args.agent_seconds:
            time.sleep(1.0)
            now, cpu = time.monotonic(), _cpu_s(agent.pid)
            samples.append((now - t0, _rss_mb(agent.pid), 100 * (cpu - last_cpu) / (now - last_t)))
            last_t, last_cpu = now, cpu
            if len(samples) % 10 == 0:
                print(
                    f"  agent t={samples[-1][0]:5.0f} s  rss={samples[-1][1]:6.1f} MB  "
                    f"cpu(10 s)={sum(s[2] for s in samples[-10:]) / 10:5.2f} %",
                    flush=True,
                )
        cpu_pct = 100 * (_cpu_s(agent.pid) - cpu0) / (time.monotonic() - t0)
        status = stub.GetLoopStatus(gw_pb2.GetLoopStatusRequest(patient_id=BENCH_PERSON), timeout=5)
        return {
            "rss_mb": max(s[1] for s in samples),
            "cpu_pct": cpu_pct,
            "samples": samples,
            "still_connected": status.hub_connected,
            "summary": status.summary,
        }
    finally:
        for proc in (agent, devices):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        devices_log.close()


def _make_hubs(gw: Gateway, count: int, work: Path) -> list[dict[str, str]]:
    """`count` distinct hub identities: key, certificate from the device CA, device row."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
    from sqlalchemy.orm import Session

    from services.device_gateway import repository
    from services.runtime.db import create_service_engine

    now = dt.datetime.now(dt.UTC)
    hubs: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        serial = f"bench-hub-{i:05d}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .sign(key, hashes.SHA256())
        )
        device_id = "hub-" + uuid.uuid4().hex
        patient_id = f"bench-person-{i:05d}"
        cert = gw.ca.sign_hub_csr(
            csr.public_bytes(serialization.Encoding.PEM).decode(),
            hub_serial=serial,
            device_id=device_id,
            patient_id=patient_id,
            now=now,
            validity=dt.timedelta(days=1),
        )
        hubs.append(
            {
                "device_id": device_id,
                "patient_id": patient_id,
                "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
                "key": key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
            }
        )
        rows.append(
            {
                "device_id": device_id,
                "patient_id": patient_id,
                "hub_serial": serial,
                "software_version": "bench",
                "state": gw_pb2.DeviceState.DEVICE_STATE_ACTIVE,
                "cert_serial": format(cert.serial_number, "x"),
                "cert_not_after": cert.not_valid_after_utc,
                "now": now,
            }
        )
        if i % 500 == 499:
            print(f"  {i + 1} hub identities", flush=True)
    engine = create_service_engine("device-gateway", f"sqlite:///{gw.db}")
    try:
        with Session(engine) as session, session.begin():
            for row in rows:
                repository.add_device(session, **row)
    finally:
        engine.dispose()
    return hubs


def _measure_streams(args: argparse.Namespace, gw: Gateway, work: Path) -> dict[str, Any]:
    print(f"streams: generating {args.streams} hub identities", flush=True)
    hubs = _make_hubs(gw, args.streams, work)
    procs: list[subprocess.Popen[str]] = []
    share = (len(hubs) + args.client_procs - 1) // args.client_procs
    for p in range(args.client_procs):
        part = hubs[p * share : (p + 1) * share]
        hubs_file = work / f"hubs-{p}.json"
        hubs_file.write_text(json.dumps(part))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.edge",
                    "--client",
                    "--hubs-file",
                    str(hubs_file),
                    "--ca",
                    str(gw.ca.cert_path),
                    "--signing-key",
                    str(work / "signing.pem"),
                    "--hub-addr",
                    gw.hub_addr,
                    "--service-addr",
                    gw.service_addr,
                    "--rate",
                    str(args.rate / args.client_procs),
                    "--command-seconds",
                    str(args.command_seconds),
                    "--seed",
                    str(p),
                    "--connect-timeout-s",
                    str(args.connect_timeout_s),
                    "--connect-rate",
                    str(args.connect_rate / args.client_procs),
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=_raise_fd_limit,  # noqa: PLW1509 - only setrlimit, no threads yet
            )
        )
    print(
        f"streams: {args.client_procs} client processes connecting {args.connect_rate:.0f} hubs/s",
        flush=True,
    )
    started = time.monotonic()
    welcomed = 0
    for proc in procs:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                doc = json.loads(line)
                if doc["event"] == "connected":
                    welcomed += doc["welcomed"]
                    for reason, n in doc["failures"].items():
                        print(f"  connect phase: {n} × {reason}", flush=True)
                    break
            else:
                print(line, end="")
    connect_s = time.monotonic() - started
    gw_rss = _rss_mb(gw.process.pid)
    print(
        f"streams: {welcomed}/{len(hubs)} welcomed in {connect_s:.1f} s; "
        f"gateway rss={gw_rss:.0f} MB; holding them for 5 s",
        flush=True,
    )
    time.sleep(5)
    cpu0, t0 = _cpu_s(gw.process.pid), time.monotonic()
    print(
        f"commands: {args.rate:.0f}/s for {args.command_seconds:.0f} s over the open streams",
        flush=True,
    )
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    rtts: list[float] = []
    lost = 0
    held = 0
    for proc in procs:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                doc = json.loads(line)
                if doc["event"] == "commands":
                    rtts.extend(doc["rtt_ms"])
                    lost += doc["lost"]
                    held += doc["held"]
                    for reason, n in doc["failures"].items():
                        print(f"  command phase: {n} × {reason}", flush=True)
                    break
            else:
                print(line, end="")
    gw_cpu = 100 * (_cpu_s(gw.process.pid) - cpu0) / (time.monotonic() - t0)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "welcomed": welcomed,
        "held_at_end": held,
        "connect_s": connect_s,
        "gateway_rss_mb": gw_rss,
        "gateway_cpu_pct": gw_cpu,
        "rtt_ms": rtts,
        "lost": lost,
    }


def _plot(agent: dict[str, Any], streams: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    t = [s[0] for s in agent["samples"]]
    ax1.plot(t, [s[1] for s in agent["samples"]], color="tab:blue")
    ax1.set_xlabel("s")
    ax1.set_ylabel("agent RSS (MB)", color="tab:blue")
    ax1.set_ylim(bottom=0)
    twin = ax1.twinx()
    twin.plot(t, [s[2] for s in agent["samples"]], color="tab:orange", lw=0.8)
    twin.set_ylabel("agent CPU (% of a core)", color="tab:orange")
    ax1.set_title("one edge agent, steady state")
    rtts = np.sort(np.asarray(streams["rtt_ms"]))
    if rtts.size:
        ax2.plot(rtts, np.arange(1, rtts.size + 1) / rtts.size)
        ax2.axvline(float(np.percentile(rtts, 99)), color="tab:red", ls="--", label="p99")
        ax2.legend()
    ax2.set_xlabel("SendCommand → EXECUTED acknowledged (ms)")
    ax2.set_ylabel("fraction")
    ax2.set_title(f"command round trip, {streams['welcomed']} open streams")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agent-seconds", type=float, default=60.0)
    parser.add_argument("--agent-warmup-s", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20.0, help="commands per second, total")
    parser.add_argument("--command-seconds", type=float, default=30.0)
    parser.add_argument("--connect-timeout-s", type=float, default=180.0)
    parser.add_argument(
        "--connect-rate", type=float, default=1000.0, help="new hub connections per second, total"
    )
    # client-process options
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hubs-file", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--signing-key", help=argparse.SUPPRESS)
    parser.add_argument("--hub-addr", help=argparse.SUPPRESS)
    parser.add_argument("--service-addr", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(_hub_client(args))
        return 0

    from services.runtime.command_signing import (
        generate_signing_key,
        write_private_key,
        write_public_key,
    )
    from services.runtime.local_kafka import bootstrap_servers, kafka_up
    from services.runtime.settings import var_dir

    if kafka_up() != 0:
        print("Kafka is not running", file=sys.stderr)
        return 1
    work = var_dir() / "bench" / "edge-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    signer = generate_signing_key()
    write_private_key(signer, work / "signing.pem")
    write_public_key(signer.public_key, work / "signing.pub")
    gw = Gateway(work, bootstrap_servers(), work / "signing.pub")
    try:
        print(f"device-gateway up (pid {gw.process.pid})", flush=True)
        agent = _measure_agent(args, gw, work)
        print(
            f"agent: rss max {agent['rss_mb']:.1f} MB, cpu {agent['cpu_pct']:.2f} % of a core "
            f"over {args.agent_seconds:.0f} s; still connected: {agent['still_connected']} "
            f"({agent['summary']})",
            flush=True,
        )
        streams = _measure_streams(args, gw, work)
    finally:
        gw.stop()
    import numpy as np

    rtts = np.asarray(streams["rtt_ms"])
    p50 = float(np.percentile(rtts, 50)) if rtts.size else float("nan")
    p99 = float(np.percentile(rtts, 99)) if rtts.size else float("nan")
    print(
        f"commands: {rtts.size} round trips, lost {streams['lost']}, p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms; gateway cpu {streams['gateway_cpu_pct']:.0f} % of a core, "
        f"rss {streams['gateway_rss_mb']:.0f} MB; streams open at start {streams['welcomed']}, "
        f"at end {streams['held_at_end']}",
        flush=True,
    )
    print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine shared with other work)")
    plot = var_dir() / "bench" / "edge.png"
    _plot(agent, streams, plot)
    print(f"plot: {plot}")
    print(
        f"RESULT edge rss_mb={agent['rss_mb']:.1f} cpu_pct={agent['cpu_pct']:.2f} "
        f"streams={min(streams['welcomed'], streams['held_at_end'])} cmd_p99_ms={p99:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
