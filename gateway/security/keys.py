"""Access-token signing keys (Ed25519) and the JWKS that publishes their public halves."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.settings import GatewaySettings

__all__ = ["KeyRing", "SigningKey", "load_key_ring"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _kid(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of the OKP key."""
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


@dataclass(frozen=True)
class KeyRing:
    """The current signing key plus retired public keys still accepted for verification."""

    current: SigningKey
    verification_keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_private_key(
        cls, private_key: Ed25519PrivateKey, previous: list[Ed25519PublicKey] | None = None
    ) -> KeyRing:
        current = SigningKey(_kid(private_key.public_key()), private_key)
        keys = {_kid(k): k for k in previous or []}
        keys[current.kid] = private_key.public_key()
        return cls(current, keys)

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(_raw_public(key)),
                    "kid": kid,
                    "use": "sig",
                    "alg": "EdDSA",
                }
                for kid, key in self.verification_keys.items()
            ]
        }


def _load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the JWT signing key must be an Ed25519 private key")
    return key


def load_key_ring(settings: GatewaySettings) -> KeyRing:
    """The configured key; in development a key generated once and kept under var/."""
    if settings.jwt_private_key_pem is not None:
        private = _load_private(settings.jwt_private_key_pem.get_secret_value().encode())
    elif settings.jwt_private_key_file is not None:
        private = _load_private(settings.jwt_private_key_file.read_bytes())
    else:
        if settings.environment != "development":
            raise ValueError("no JWT signing key configured")
        path = settings.dev_key_path()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        private = _load_private(path.read_bytes())
    previous: list[Ed25519PublicKey] = []
    for pem_text in settings.jwt_previous_public_keys_pem:
        key = serialization.load_pem_public_key(pem_text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("previous JWT keys must be Ed25519 public keys")
        previous.append(key)
    return KeyRing.from_private_key(private, previous)
