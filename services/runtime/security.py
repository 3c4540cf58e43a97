"""Transport security and caller identity for gRPC services.

- `server_credentials(settings)` / `channel_credentials(...)`: TLS, optionally mutual, from PEM
  files.
- `ensure_dev_pki(...)`: a local development CA with per-service certificates under
  `var/pki/` (never used in production; there the certificates come from the platform CA).
- Authentication hooks for `AuthInterceptor`: a hook receives a `CallIdentity` (method,
  metadata, peer and the verified peer-certificate names) and returns the `Principal` or
  raises `Unauthenticated` / `PermissionDenied`. `require_peer_certificate` and
  `require_service_token` cover mTLS service identity and static service tokens; `any_of`
  combines hooks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.errors import PermissionDenied, Unauthenticated
from services.runtime.settings import ServiceSettings, var_dir

__all__ = [
    "AuthHook",
    "CallIdentity",
    "DevPki",
    "Principal",
    "ServiceCertificate",
    "any_of",
    "channel_credentials",
    "ensure_dev_pki",
    "require_peer_certificate",
    "require_service_token",
    "server_credentials",
    "token_digest",
]


# ------------------------------------------------------------------ identities and hooks
@dataclass(frozen=True)
class Principal:
    """Who is calling: `kind` is "service", "device", "user" or "anonymous"."""

    kind: str
    name: str
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CallIdentity:
    """What an authentication hook may look at for one call."""

    method: str
    metadata: Mapping[str, str]
    peer: str
    # Names from the client certificate that the TLS layer verified against our CA
    # (common name and DNS subject alternative names); empty without mutual TLS.
    peer_cert_names: tuple[str, ...] = field(default_factory=tuple)


AuthHook = Callable[[CallIdentity], Awaitable[Principal]]


def require_peer_certificate(allowed_names: Collection[str]) -> AuthHook:
    """Admit callers whose verified client certificate names one of `allowed_names`."""
    allowed = frozenset(allowed_names)

    async def hook(identity: CallIdentity) -> Principal:
        if not identity.peer_cert_names:
            raise Unauthenticated("a client certificate is required")
        for name in identity.peer_cert_names:
            if name in allowed:
                return Principal(kind="service", name=name)
        raise PermissionDenied("this client certificate may not call this method")

    return hook


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a service token; configuration stores digests, never tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def require_service_token(digests_to_names: Mapping[str, str]) -> AuthHook:
    """Admit callers sending `authorization: Bearer <token>` whose digest is known."""
    known = dict(digests_to_names)

    async def hook(identity: CallIdentity) -> Principal:
        header = identity.metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("a bearer service token is required")
        presented = token_digest(token.strip())
        for digest, name in known.items():
            # constant-time compare so the digest cannot be probed byte by byte
            if hmac.compare_digest(presented, digest):
                return Principal(kind="service", name=name)
        raise Unauthenticated("unknown service token")

    return hook


def any_of(*hooks: AuthHook) -> AuthHook:
    """The first hook that admits the caller wins; otherwise the first hook's refusal."""
    if not hooks:
        raise ValueError("any_of needs at least one hook")

    async def hook(identity: CallIdentity) -> Principal:
        first_error: Exception | None = None
        for candidate in hooks:
            try:
                return await candidate(identity)
            except (Unauthenticated, PermissionDenied) as error:
                first_error = first_error or error
        assert first_error is not None
        raise first_error

    return hook


# ------------------------------------------------------------------ TLS credentials
def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from settings, or None when TLS is off (development only)."""
    if settings.grpc_tls_cert_path is None or settings.grpc_tls_key_path is None:
        return None
    root = settings.grpc_tls_ca_path.read_bytes() if settings.grpc_tls_ca_path else None
    return grpc.ssl_server_credentials(
        [(settings.grpc_tls_key_path.read_bytes(), settings.grpc_tls_cert_path.read_bytes())],
        root_certificates=root,
        require_client_auth=settings.grpc_require_client_cert,
    )


def channel_credentials(
    ca_path: Path, cert_path: Path | None = None, key_path: Path | None = None
) -> grpc.ChannelCredentials:
    """Client TLS credentials trusting `ca_path`, presenting a client cert when given."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_path.read_bytes(),
        private_key=key_path.read_bytes() if key_path else None,
        certificate_chain=cert_path.read_bytes() if cert_path else None,
    )


# ------------------------------------------------------------------ development PKI
@dataclass(frozen=True)
class ServiceCertificate:
    name: str
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class DevPki:
    directory: Path
    ca_cert_path: Path
    ca_key_path: Path
    certificates: Mapping[str, ServiceCertificate]


_DEV_VALIDITY = dt.timedelta(days=365)
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC key")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Langerhans development CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _DEV_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, directory: Path
) -> ServiceCertificate:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if existing.issuer == ca_cert.subject:
            return ServiceCertificate(name, cert_path, key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    # One certificate serves as both server and client identity of the service; the DNS
    # names cover local runs (localhost, 127.0.0.1) and the Kubernetes service name.
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _DEV_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ServiceCertificate(name, cert_path, key_path)


def ensure_dev_pki(names: Collection[str], directory: Path | None = None) -> DevPki:
    """Create (or reuse) a development CA and one certificate per name; idempotent.

    Default location is `var/pki/`. Keys are EC P-256, written with mode 0600.
    """
    for name in names:
        # names become file names and DNS names: keep them to a safe alphabet
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"certificate name {name!r} must match {_NAME_RE.pattern}")
    directory = directory if directory is not None else var_dir() / "pki"
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_ca(directory)
    certificates = {name: _issue(ca_cert, ca_key, name, directory) for name in names}
    return DevPki(
        directory=directory,
        ca_cert_path=directory / "ca.pem",
        ca_key_path=directory / "ca-key.pem",
        certificates=certificates,
    )
