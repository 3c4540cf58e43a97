"""Ed25519 signing of pump commands (dosing engine) and its verification (edge hub).

The signature covers exactly the bytes of a serialized `PumpCommand`; those bytes travel
unchanged inside `SignedPumpCommand.command`, and the hub verifies them *before* parsing, so
no re-serialization can ever change what was signed. A key id names the signing key; by
default it is a fingerprint of the public key (`ed25519:` + 16 hex digits of its SHA-256), so a
hub pins public keys by id at enrolment and a rotated key gets a new id.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError
from langerhans.device.v1 import device_pb2

__all__ = [
    "CommandSigner",
    "SignatureFailure",
    "SignatureRejectedError",
    "TrustedKeys",
    "dev_signing_key_paths",
    "generate_signing_key",
    "key_id_for",
    "load_public_key",
    "load_signer",
    "write_private_key",
    "write_public_key",
]

_SIGNATURE_LEN = 64


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """Stable id of a public key: `ed25519:` and the first 16 hex digits of SHA-256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class CommandSigner:
    """Holds the dosing engine's private key; signs serialized commands."""

    private_key: Ed25519PrivateKey
    key_id: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign_bytes(self, command_bytes: bytes) -> device_pb2.SignedPumpCommand:
        """Sign already-serialized `PumpCommand` bytes."""
        if not command_bytes:
            raise ValueError("refusing to sign an empty command")
        return device_pb2.SignedPumpCommand(
            command=command_bytes,
            signature=self.private_key.sign(command_bytes),
            key_id=self.key_id,
        )

    def sign(self, command: device_pb2.PumpCommand) -> device_pb2.SignedPumpCommand:
        """Serialize once (deterministically) and sign those bytes."""
        if not command.command_id or not command.device_id or not command.WhichOneof("action"):
            raise ValueError("a pump command needs command_id, device_id and an action")
        return self.sign_bytes(command.SerializeToString(deterministic=True))


def generate_signing_key(key_id: str | None = None) -> CommandSigner:
    private_key = Ed25519PrivateKey.generate()
    return CommandSigner(private_key, key_id or key_id_for(private_key.public_key()))


def write_private_key(signer: CommandSigner, path: Path) -> None:
    """PEM (PKCS#8, unencrypted) readable only by the owner; never overwrites an existing key."""
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def write_public_key(public_key: Ed25519PublicKey, path: Path) -> None:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)


def load_signer(path: Path, key_id: str | None = None) -> CommandSigner:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return CommandSigner(key, key_id or key_id_for(key.public_key()))


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


def dev_signing_key_paths(keys_dir: Path | None = None) -> tuple[Path, Path]:
    """Development only: the shared command-signing pair `var/keys/command-signing.pem` (the
    dosing engine signs with it) and `.pub` (the device gateway pins it and hands it to hubs).

    Created once by whichever process asks first; the public key is always derived from the
    private key, so two processes starting together cannot end up with mismatched halves.
    """
    # imported here: the settings module brings pydantic, which a hub that only verifies
    # commands does not otherwise load (edge agent memory)
    from services.runtime.settings import var_dir

    directory = keys_dir or var_dir() / "keys"
    private, public = directory / "command-signing.pem", directory / "command-signing.pub"
    if not private.exists():
        # another process may win the race: then its key is the one
        with contextlib.suppress(FileExistsError):
            write_private_key(generate_signing_key(), private)
    if not public.exists():
        signer = load_signer(private)
        tmp = public.with_suffix(f".pub.{os.getpid()}.tmp")
        write_public_key(signer.public_key, tmp)
        tmp.replace(public)
    return private, public


class SignatureFailure(enum.Enum):
    """Why an envelope failed; values match `PumpCommandRejectionReason` names."""

    MALFORMED = "MALFORMED"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"


class SignatureRejectedError(Exception):
    """The envelope is not an authentic command from a trusted key."""

    def __init__(self, failure: SignatureFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


class TrustedKeys:
    """The public keys a hub accepts commands from, by key id (read-only after construction)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | Iterable[Ed25519PublicKey]) -> None:
        if isinstance(keys, Mapping):
            self._keys = dict(keys)
        else:
            self._keys = {key_id_for(k): k for k in keys}
        if not self._keys:
            raise ValueError("a hub must trust at least one platform key")

    @classmethod
    def from_pem_files(cls, paths: Iterable[Path]) -> TrustedKeys:
        return cls([load_public_key(p) for p in paths])

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, signed: device_pb2.SignedPumpCommand | bytes) -> device_pb2.PumpCommand:
        """The parsed command if the signature over its exact bytes verifies.

        Accepts the envelope object or its serialized bytes (as it arrives off the wire).
        Raises `SignatureRejectedError` for anything else; nothing is parsed before verification.
        """
        if isinstance(signed, bytes):
            envelope = device_pb2.SignedPumpCommand()
            try:
                envelope.ParseFromString(signed)
            except DecodeError as exc:
                raise SignatureRejectedError(
                    SignatureFailure.MALFORMED, "envelope not parseable"
                ) from exc
        else:
            envelope = signed
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise SignatureRejectedError(
                SignatureFailure.UNKNOWN_KEY, f"key id {envelope.key_id!r} is not trusted"
            )
        if len(envelope.signature) != _SIGNATURE_LEN or not envelope.command:
            raise SignatureRejectedError(SignatureFailure.MALFORMED, "missing command or signature")
        try:
            key.verify(envelope.signature, envelope.command)
        except InvalidSignature as exc:
            raise SignatureRejectedError(
                SignatureFailure.BAD_SIGNATURE, "signature does not verify"
            ) from exc
        command = device_pb2.PumpCommand()
        try:
            command.ParseFromString(envelope.command)
        except DecodeError as exc:  # signed garbage: authentic, but unusable
            raise SignatureRejectedError(
                SignatureFailure.MALFORMED, "command not parseable"
            ) from exc
        return command
