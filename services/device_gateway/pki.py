"""The platform device CA: hub client certificates from CSRs, and reading a hub's identity.

A hub certificate names the hub twice: subject common name = device id, and URI subject
alternative names `urn:langerhans:device:<device id>` and `urn:langerhans:patient:<patient id>`.
The gateway takes a hub's identity only from a certificate the TLS layer verified against this
CA, and checks its serial against the revocation list on every stream.

Development: `ensure_device_ca(dir)` creates the CA and the gateway's server certificate under
`var/pki/device/`. Production: the CA certificate and key come from mounted secret files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEVICE_URN",
    "PATIENT_URN",
    "CsrRejectedError",
    "DeviceCa",
    "DeviceIdentity",
    "ensure_device_ca",
    "identity_from_certificate",
    "load_device_ca",
]

DEVICE_URN = "urn:langerhans:device:"
PATIENT_URN = "urn:langerhans:patient:"
_CA_VALIDITY = dt.timedelta(days=3650)
_SERVER_VALIDITY = dt.timedelta(days=365)
_MAX_SERIAL_LEN = 64


class CsrRejectedError(ValueError):
    """The CSR is malformed, badly signed, of the wrong key type or asks for a wrong subject."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a verified client certificate says the caller is."""

    device_id: str
    patient_id: str
    serial_hex: str
    not_after: dt.datetime


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


@dataclass(frozen=True)
class DeviceCa:
    """The CA that signs hub certificates (and the gateway's own server certificate)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign_hub_csr(
        self,
        csr_pem: str,
        *,
        hub_serial: str,
        device_id: str,
        patient_id: str,
        now: dt.datetime,
        validity: dt.timedelta,
    ) -> x509.Certificate:
        """A client certificate for the CSR's key; identity comes from us, never the CSR.

        The CSR must be a validly self-signed EC P-256 request whose subject is exactly
        `CN=<hub_serial>` (the key belongs to the hub presenting the token).
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise CsrRejectedError("csr_pem is not a PEM certificate signing request") from exc
        if not csr.is_signature_valid:
            raise CsrRejectedError("the CSR's self-signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise CsrRejectedError("the hub key must be EC P-256")
        expected = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hub_serial)])
        if csr.subject != expected:
            raise CsrRejectedError("the CSR subject must be exactly CN=<hub_serial>")
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(DEVICE_URN + device_id),
                        x509.UniformResourceIdentifier(PATIENT_URN + patient_id),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_server_certificate(self, directory: Path, hostnames: list[str]) -> tuple[Path, Path]:
        """The gateway's TLS server certificate (dev), reused while the CA is the same."""
        cert_path, key_path = directory / "gateway.pem", directory / "gateway-key.pem"
        if cert_path.exists() and key_path.exists():
            existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if existing.issuer == self.certificate.subject:
                return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-gateway")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _SERVER_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write_private(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def load_device_ca(cert_path: Path, key_path: Path) -> DeviceCa:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return DeviceCa(cert, key, cert_path)


def ensure_device_ca(directory: Path) -> DeviceCa:
    """Create (once) or load the development device CA in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        return load_device_ca(cert_path, key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Langerhans development device CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CA_VALIDITY)
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
    _write_private(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return DeviceCa(cert, key, cert_path)


def identity_from_certificate(cert_pem: bytes) -> DeviceIdentity | None:
    """The device and patient a (TLS-verified) hub certificate names; None if it names none."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    devices = [u[len(DEVICE_URN) :] for u in uris if u.startswith(DEVICE_URN)]
    patients = [u[len(PATIENT_URN) :] for u in uris if u.startswith(PATIENT_URN)]
    if len(devices) != 1 or len(patients) != 1 or not devices[0] or not patients[0]:
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != devices[0]:
        return None
    serial_hex = format(cert.serial_number, "x")
    if len(serial_hex) > _MAX_SERIAL_LEN:
        return None
    return DeviceIdentity(devices[0], patients[0], serial_hex, cert.not_valid_after_utc)
