"""The hub port refuses every caller that is not an enrolled, unrevoked hub speaking for itself.

Real processes and sockets on loopback: a device-gateway subprocess (mutual TLS on its hub
port) and gRPC clients presenting: no certificate, a self-signed certificate, a certificate
from another CA, an expired certificate from the platform CA, a revoked certificate, and a
valid certificate of hub A whose messages claim hub B or person B. Accepted = 0 in every case;
a control hub with its own valid certificate is accepted, so the test can tell the difference.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc
from langerhans.device.v1 import device_pb2
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.client import HubIdentity, dev_enrollment_token, enroll
from services.device_gateway import repository
from services.device_gateway.pki import DEVICE_URN, PATIENT_URN, ensure_device_ca, load_device_ca
from services.device_gateway.settings import DEV_ADMIN_TOKEN
from services.runtime.db import create_service_engine
from services.runtime.local_kafka import bootstrap_servers, kafka_up
from services.runtime.outbox import outbox_events
from tests.device_gateway.harness import GatewayProcess, clock_env, new_signer, start_gateway

pytestmark = [pytest.mark.kafka]


@dataclass(frozen=True)
class Attempt:
    accepted: bool  # the gateway welcomed the stream / acknowledged the message
    code: grpc.StatusCode | None
    detail: str


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _hub_cert(
    device_id: str,
    patient_id: str,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[bytes, bytes]:
    """A hub-shaped client certificate (CN and URNs as the platform issues them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    issuer_name, issuer_key = issuer or (subject, key)  # no issuer: self-signed
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(DEVICE_URN + device_id),
                    x509.UniformResourceIdentifier(PATIENT_URN + patient_id),
                ]
            ),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _hello(device_id: str) -> gw_pb2.ConnectRequest:
    return gw_pb2.ConnectRequest(hub_sequence=0, hello=gw_pb2.HubHello(device_id=device_id))


def _reading(device_id: str, patient_id: str, sequence: int) -> gw_pb2.ConnectRequest:
    item = device_pb2.DeviceTelemetry(patient_id=patient_id, device_id=device_id)
    item.cgm_reading.sensor_id = "spoof"
    item.cgm_reading.glucose.value = 40.0
    item.cgm_reading.glucose.unit = common_pb2.GlucoseUnit.GLUCOSE_UNIT_MG_DL
    item.cgm_reading.measured_at.GetCurrentTime()
    return gw_pb2.ConnectRequest(hub_sequence=sequence, telemetry=item)


def _outcome(device_id: str, patient_id: str, sequence: int) -> gw_pb2.ConnectRequest:
    outcome = device_pb2.PumpCommandOutcome(
        command_id="not-yours",
        device_id=device_id,
        patient_id=patient_id,
        state=device_pb2.PUMP_COMMAND_STATE_EXECUTED,
    )
    return gw_pb2.ConnectRequest(hub_sequence=sequence, command_outcome=outcome)


def _attempt(
    addr: str,
    ca_pem: bytes,
    messages: list[gw_pb2.ConnectRequest],
    *,
    cert: tuple[bytes, bytes] | None,
) -> Attempt:
    """Open Connect, send `messages`, keep the stream open; accepted = welcomed (when only a
    hello is sent) or the last message acknowledged."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        certificate_chain=cert[0] if cert else None,
        private_key=cert[1] if cert else None,
    )
    done = threading.Event()

    def requests() -> Iterator[gw_pb2.ConnectRequest]:
        yield from messages
        done.wait(15)  # hold the stream open: the gateway, not the client, must end it

    want_ack = messages[-1].hub_sequence
    welcomed = acked = False
    with grpc.secure_channel(addr, credentials) as channel:
        call = gw_grpc.DeviceGatewayServiceStub(channel).Connect(requests(), timeout=10)
        try:
            for response in call:
                kind = response.WhichOneof("payload")
                welcomed |= kind == "welcome"
                acked |= kind == "telemetry_ack" and (
                    response.telemetry_ack.hub_sequence >= want_ack > 0
                )
                if (want_ack == 0 and welcomed) or acked:
                    return Attempt(True, None, "accepted")
        except grpc.RpcError as exc:
            return Attempt(False, exc.code(), exc.details() or "")
        finally:
            done.set()
    return Attempt(False, None, "stream ended")


async def _enroll(gw: GatewayProcess, directory: Path, patient_id: str) -> HubIdentity:
    token = await dev_enrollment_token(gw.service_addr, patient_id, DEV_ADMIN_TOKEN)
    return await enroll(
        gw.enroll_addr, gw.ca_path.read_bytes(), token, directory.name + "-serial", directory
    )


def _own_cert(identity: HubIdentity) -> tuple[bytes, bytes]:
    return identity.cert_path.read_bytes(), identity.key_path.read_bytes()


def test_hub_port_accepts_nobody_but_the_hub_itself(tmp_path: Path) -> None:
    assert kafka_up() == 0
    _signer, public = new_signer(tmp_path)
    db = tmp_path / "gateway.sqlite3"
    gw = start_gateway(
        tmp_path / "gw", kafka=bootstrap_servers(), public_key=public, clock=clock_env(1.0),
        db_path=db,
    )  # fmt: skip
    try:
        hub_a = asyncio.run(_enroll(gw, tmp_path / "hub-a", "person-a"))
        hub_b = asyncio.run(_enroll(gw, tmp_path / "hub-b", "person-b"))
        hub_r = asyncio.run(_enroll(gw, tmp_path / "hub-r", "person-r"))
        gw.stub().RevokeDevice(
            gw_pb2.RevokeDeviceRequest(
                device_id=hub_r.device_id, reason="lost", requested_by="test"
            ),
            metadata=(("authorization", f"Bearer {DEV_ADMIN_TOKEN}"),),
            timeout=10,
        )
        ca_pem = gw.ca_path.read_bytes()
        platform_ca = load_device_ca(gw.ca_path, gw.ca_path.parent / "ca-key.pem")
        other_ca = ensure_device_ca(tmp_path / "other-ca")
        now = dt.datetime.now(dt.UTC)
        a, b = hub_a, hub_b

        def valid_window(
            cert_issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        ) -> tuple[bytes, bytes]:
            return _hub_cert(
                a.device_id, a.patient_id, issuer=cert_issuer,
                not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=1),
            )  # fmt: skip

        platform = (platform_ca.certificate.subject, platform_ca.key)
        hello_a = [_hello(a.device_id)]
        expired = _hub_cert(
            a.device_id, a.patient_id, issuer=platform,
            not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=1),
        )  # fmt: skip
        cases: dict[str, tuple[list[gw_pb2.ConnectRequest], tuple[bytes, bytes] | None]] = {
            "no certificate": (hello_a, None),
            "self-signed": (hello_a, valid_window(None)),
            "another CA": (hello_a, valid_window((other_ca.certificate.subject, other_ca.key))),
            "expired (platform CA)": (hello_a, expired),
            "revoked": ([_hello(hub_r.device_id)], _own_cert(hub_r)),
            "unenrolled identity, platform CA": (hello_a, valid_window(platform)),
            "hello as hub B": ([_hello(b.device_id)], _own_cert(a)),
            "reading for person B": (
                [_hello(a.device_id), _reading(a.device_id, b.patient_id, 1)],
                _own_cert(a),
            ),
            "reading as hub B": (
                [_hello(a.device_id), _reading(b.device_id, b.patient_id, 1)],
                _own_cert(a),
            ),
            "outcome for hub B": (
                [_hello(a.device_id), _outcome(b.device_id, b.patient_id, 1)],
                _own_cert(a),
            ),
        }
        results = {
            name: _attempt(gw.hub_addr, ca_pem, messages, cert=cert)
            for name, (messages, cert) in cases.items()
        }
        accepted = [name for name, r in results.items() if r.accepted]
        assert accepted == [], results
        handshake = {grpc.StatusCode.UNAVAILABLE}  # TLS refused before any RPC
        for name in ("no certificate", "self-signed", "another CA", "expired (platform CA)"):
            assert results[name].code in handshake, (name, results[name])
        for name in (
            "revoked",
            "unenrolled identity, platform CA",
            "hello as hub B",
            "reading for person B",
            "reading as hub B",
            "outcome for hub B",
        ):
            assert results[name].code == grpc.StatusCode.PERMISSION_DENIED, (name, results[name])
        print(f"\nrefused {len(results)} of {len(results)}; accepted = {len(accepted)}")

        # nothing the impostors sent reached the outbox (so nothing reached Kafka)
        engine = create_service_engine("device-gateway", f"sqlite:///{db}")
        try:
            with Session(engine) as session:
                spoofed = session.scalar(
                    select(func.count()).where(outbox_events.c.key == b.patient_id)
                )
                acked_b = repository.get_device(session, b.device_id)
        finally:
            engine.dispose()
        assert spoofed == 0
        assert acked_b is not None
        assert acked_b.acked_hub_sequence == 0

        # control: the genuine hub with its own certificate is welcomed and acknowledged, and
        # Connect on the enrolment port (no client certificate there) is not served at all
        control = _attempt(
            gw.hub_addr, ca_pem, [_hello(a.device_id), _reading(a.device_id, a.patient_id, 1)],
            cert=_own_cert(a),
        )  # fmt: skip
        assert control.accepted, control
        wrong_port = _attempt(gw.enroll_addr, ca_pem, hello_a, cert=_own_cert(a))
        assert not wrong_port.accepted
        assert wrong_port.code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        gw.stop()
