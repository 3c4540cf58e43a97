"""TLS and mutual TLS over a real socket, with certificates from the development PKI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.grpc_server import GrpcServer, build_server, generic_service
from services.runtime.interceptors import current_principal
from services.runtime.security import (
    DevPki,
    channel_credentials,
    ensure_dev_pki,
    require_peer_certificate,
)
from services.runtime.settings import ServiceSettings

SERVICE = "langerhans.test.v1.Probe"


async def whoami(request: bytes, context: Any) -> bytes:
    principal = current_principal()
    return principal.name.encode() if principal else b"anonymous"


def _identity(data: bytes) -> bytes:
    return data


def probe() -> Any:
    return generic_service(
        SERVICE, {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami, _identity, _identity)}
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(["probe", "dosing-engine", "intruder"], tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(["dosing-engine"], tmp_path_factory.mktemp("other-pki"))


def tls_settings(pki: DevPki, *, mtls: bool) -> ServiceSettings:
    cert = pki.certificates["probe"]
    return ServiceSettings(
        service_name="probe",
        grpc_tls_cert_path=cert.cert_path,
        grpc_tls_key_path=cert.key_path,
        grpc_tls_ca_path=pki.ca_cert_path,
        grpc_require_client_cert=mtls,
    )


async def health(address: str, credentials: grpc.ChannelCredentials) -> int:
    async with aio.secure_channel(address, credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(reply.status)


def client(pki: DevPki, name: str | None, ca: Path | None = None) -> grpc.ChannelCredentials:
    if name is None:
        return channel_credentials(ca or pki.ca_cert_path)
    cert = pki.certificates[name]
    return channel_credentials(ca or pki.ca_cert_path, cert.cert_path, cert.key_path)


@pytest.fixture
async def tls_server(pki: DevPki) -> AsyncIterator[GrpcServer]:
    srv = build_server(tls_settings(pki, mtls=False), [probe()])
    await srv.start()
    yield srv
    await srv.stop(0)


@pytest.fixture
async def mtls_server(pki: DevPki) -> AsyncIterator[GrpcServer]:
    srv = build_server(
        tls_settings(pki, mtls=True),
        [probe()],
        auth_hook=require_peer_certificate({"dosing-engine"}),
    )
    await srv.start()
    yield srv
    await srv.stop(0)


def test_dev_pki_is_idempotent_and_keys_are_private(pki: DevPki) -> None:
    again = ensure_dev_pki(["probe"], pki.directory)
    assert again.certificates["probe"].cert_path.read_bytes() == (
        pki.certificates["probe"].cert_path.read_bytes()
    )
    assert pki.certificates["probe"].key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(pki.certificates["probe"].cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    cert.verify_directly_issued_by(ca)


async def test_tls_server_answers_a_client_trusting_its_ca(
    tls_server: GrpcServer, pki: DevPki
) -> None:
    assert tls_server.tls
    status = await health(tls_server.address, client(pki, None))
    assert status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_client_refuses_a_server_from_another_ca(
    tls_server: GrpcServer, other_pki: DevPki, pki: DevPki
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await health(tls_server.address, client(pki, None, ca=other_pki.ca_cert_path))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_cannot_talk_to_tls_server(tls_server: GrpcServer) -> None:
    async with aio.insecure_channel(tls_server.address) as channel:
        with pytest.raises(aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_client_without_certificate(
    mtls_server: GrpcServer, pki: DevPki
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await health(mtls_server.address, client(pki, None))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_certificate_from_another_ca(
    mtls_server: GrpcServer, pki: DevPki, other_pki: DevPki
) -> None:
    stranger = other_pki.certificates["dosing-engine"]
    credentials = channel_credentials(pki.ca_cert_path, stranger.cert_path, stranger.key_path)
    with pytest.raises(aio.AioRpcError) as caught:
        await health(mtls_server.address, credentials)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_peer_identity_reaches_the_auth_hook(
    mtls_server: GrpcServer, pki: DevPki
) -> None:
    whoami_path = f"/{SERVICE}/WhoAmI"
    async with aio.secure_channel(mtls_server.address, client(pki, "dosing-engine")) as channel:
        reply = await channel.unary_unary(whoami_path, _identity, _identity)(b"", timeout=5)
    assert reply == b"dosing-engine"

    # same CA, valid certificate, but not on the allow-list of this method
    async with aio.secure_channel(mtls_server.address, client(pki, "intruder")) as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as caught:
            await channel.unary_unary(whoami_path, _identity, _identity)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
