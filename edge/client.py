"""The hub's side of the device gateway: enrolment and the Connect stream.

`enroll` makes the hub's EC P-256 key (it never leaves the hub), sends a CSR with the one-time
token and stores the certificate, the platform CA and the pinned command keys. `HubLink` keeps
the mutual-TLS stream up: after every (re)connect it resumes from the cloud's acknowledged
sequence (CloudWelcome), streams the outbox in order, drops records the cloud acknowledged, and
hands signed commands to the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc
from langerhans.device.v1 import device_pb2

from edge.outbox import Outbox, RecordKind
from services.runtime.clock import Clock
from services.runtime.command_signing import TrustedKeys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["HubIdentity", "HubLink", "dev_enrollment_token", "enroll", "load_identity"]

log = logging.getLogger(__name__)
_BATCH = 200


@dataclass(frozen=True)
class HubIdentity:
    device_id: str
    patient_id: str
    hub_serial: str
    directory: Path
    command_keys: dict[str, bytes]

    @property
    def key_path(self) -> Path:
        return self.directory / "hub-key.pem"

    @property
    def cert_path(self) -> Path:
        return self.directory / "hub.pem"

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    def trusted_keys(self) -> TrustedKeys:
        return TrustedKeys(
            {k: Ed25519PublicKey.from_public_bytes(v) for k, v in self.command_keys.items()}
        )


def load_identity(directory: Path) -> HubIdentity | None:
    path = directory / "identity.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    return HubIdentity(
        device_id=doc["device_id"],
        patient_id=doc["patient_id"],
        hub_serial=doc["hub_serial"],
        directory=directory,
        command_keys={k: bytes.fromhex(v) for k, v in doc["command_keys"].items()},
    )


async def dev_enrollment_token(service_addr: str, patient_id: str, admin_token: str) -> str:
    """Development bootstrap: ask the gateway's service port (loopback only) for a token."""
    async with aio.insecure_channel(service_addr) as channel:
        stub = gw_grpc.DeviceGatewayServiceStub(channel)
        response = await stub.CreateEnrollmentToken(
            gw_pb2.CreateEnrollmentTokenRequest(patient_id=patient_id, requested_by="edge-fleet"),
            metadata=(("authorization", f"Bearer {admin_token}"),),
            timeout=10,
        )
    return response.enrollment_token


async def enroll(
    enroll_addr: str, gateway_ca_pem: bytes, token: str, hub_serial: str, directory: Path
) -> HubIdentity:
    """Exchange the token and a CSR for a certificate; writes the identity to `directory`."""
    # X.509 is needed once, at enrolment: imported here, it stays out of a running hub's memory
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hub_serial)]))
        .sign(key, hashes.SHA256())
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=gateway_ca_pem)
    async with aio.secure_channel(enroll_addr, credentials) as channel:
        stub = gw_grpc.DeviceGatewayServiceStub(channel)
        response = await stub.Enroll(
            gw_pb2.EnrollRequest(
                enrollment_token=token,
                csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
                hub_serial=hub_serial,
                software_version="langerhans-edge/0.1",
            ),
            timeout=30,
        )
    return await asyncio.to_thread(_store_identity, directory, key, hub_serial, response)


def _store_identity(
    directory: Path,
    key: ec.EllipticCurvePrivateKey,
    hub_serial: str,
    response: gw_pb2.EnrollResponse,
) -> HubIdentity:
    """Key (0600), certificate, CA, then identity.json last (atomically): a hub that crashed
    half-way has no identity.json and enrols again."""
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "hub-key.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (directory / "hub.pem").write_text(response.certificate_chain_pem)
    (directory / "ca.pem").write_text(response.ca_certificate_pem)
    doc = {
        "device_id": response.device_id,
        "patient_id": response.patient_id,
        "hub_serial": hub_serial,
        "command_keys": {k.key_id: k.ed25519_public_key.hex() for k in response.command_keys},
    }
    tmp = directory / "identity.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(directory / "identity.json")
    identity = load_identity(directory)
    assert identity is not None
    return identity


def _ts(clock: Clock) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(clock.now())
    return ts


def to_request(kind: RecordKind, sequence: int, payload: bytes) -> gw_pb2.ConnectRequest:
    """An outbox record as a stream message (payload: DeviceTelemetry / outcome / heartbeat)."""
    request = gw_pb2.ConnectRequest(hub_sequence=sequence)
    if kind is RecordKind.COMMAND_OUTCOME:
        request.command_outcome.ParseFromString(payload)
    elif kind is RecordKind.HEARTBEAT:
        request.heartbeat.ParseFromString(payload)
    else:
        request.telemetry.ParseFromString(payload)
    return request


CommandHandler = Callable[[device_pb2.SignedPumpCommand], Awaitable[None]]


class HubLink:
    """Keeps one Connect stream to the gateway alive and the outbox flowing."""

    def __init__(
        self,
        identity: HubIdentity,
        hub_addr: str,
        outbox: Outbox,
        clock: Clock,
        *,
        on_command: CommandHandler,
        hello: Callable[[], gw_pb2.HubHello],
        on_server_time: Callable[[Timestamp], None] = lambda _ts: None,
    ) -> None:
        self._identity = identity
        self._addr = hub_addr
        self._outbox = outbox
        self._clock = clock
        self._on_command = on_command
        self._hello = hello
        self._on_server_time = on_server_time
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self.connected = False
        self.last_cloud_message_mono_s: float | None = None
        self.acked_sequence = 0
        self.reconnects = 0

    def wake(self) -> None:
        """New records are in the outbox."""
        self._wake.set()

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._identity.ca_path.read_bytes(),
            private_key=self._identity.key_path.read_bytes(),
            certificate_chain=self._identity.cert_path.read_bytes(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        backoff_s = 0.5
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff_s = 0.5
            except aio.AioRpcError as exc:
                log.info("stream to the gateway ended: %s %s", exc.code(), exc.details())
            except (TimeoutError, OSError) as exc:
                log.info("stream to the gateway ended: %s", exc)
            finally:
                self.connected = False
            if stop.is_set():
                return
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff_s)  # real seconds: network backoff
            backoff_s = min(backoff_s * 2, 10.0)

    async def _session(self, stop: asyncio.Event) -> None:
        async with aio.secure_channel(self._addr, self._credentials()) as channel:
            stub = gw_grpc.DeviceGatewayServiceStub(channel)
            outgoing: asyncio.Queue[gw_pb2.ConnectRequest | None] = asyncio.Queue()

            async def requests() -> AsyncIterator[gw_pb2.ConnectRequest]:
                while True:
                    item = await outgoing.get()
                    if item is None:
                        return
                    yield item

            hello = gw_pb2.ConnectRequest(hub_sequence=0, sent_at=_ts(self._clock))
            hello.hello.CopyFrom(self._hello())
            outgoing.put_nowait(hello)
            call = stub.Connect(requests())
            sender: asyncio.Task[None] | None = None
            stopper = asyncio.create_task(stop.wait())
            try:
                reader = call.__aiter__()
                while True:
                    nxt = asyncio.ensure_future(reader.__anext__())
                    done, _ = await asyncio.wait(
                        {nxt, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stopper in done:
                        nxt.cancel()
                        return
                    try:
                        response = nxt.result()
                    except StopAsyncIteration:
                        return
                    self.last_cloud_message_mono_s = time.monotonic()
                    kind = response.WhichOneof("payload")
                    if kind == "welcome":
                        self.connected = True
                        self.acked_sequence = response.welcome.acked_hub_sequence
                        self._outbox.ack(self.acked_sequence)
                        sender = asyncio.create_task(self._send(outgoing, self.acked_sequence))
                    elif kind == "telemetry_ack":
                        self.acked_sequence = max(
                            self.acked_sequence, response.telemetry_ack.hub_sequence
                        )
                        self._outbox.ack(self.acked_sequence)
                        self._acked.set()
                    elif kind == "signed_command":
                        await self._on_command(response.signed_command)
                    elif kind == "heartbeat":
                        self._on_server_time(response.heartbeat.server_time)
                    elif kind == "time_sync":
                        self._on_server_time(response.time_sync.server_time)
            finally:
                stopper.cancel()
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                outgoing.put_nowait(None)
                call.cancel()

    async def _send(
        self, outgoing: asyncio.Queue[gw_pb2.ConnectRequest | None], after: int
    ) -> None:
        """Stream every outbox record after `after`, in order, then wait for more."""
        sent = after
        while True:
            self._wake.clear()
            records = self._outbox.peek(limit=_BATCH, after=sent)
            for record in records:
                request = to_request(record.kind, record.sequence, record.payload)
                request.sent_at.CopyFrom(_ts(self._clock))
                outgoing.put_nowait(request)
                sent = record.sequence
            # flow control: do not run far ahead of the acknowledgements
            while sent - self.acked_sequence > 4 * _BATCH:
                self._acked.clear()
                await self._acked.wait()
            if len(records) < _BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
