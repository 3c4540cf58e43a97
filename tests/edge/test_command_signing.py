"""Ed25519 command signing: round trip, key files, and what a verifier refuses."""

import pytest

from services.runtime.command_signing import (
    SignatureFailure,
    SignatureRejectedError,
    TrustedKeys,
    generate_signing_key,
    key_id_for,
    load_public_key,
    load_signer,
    write_private_key,
    write_public_key,
)
from tests.edge._commands import T0, make_command


def test_sign_verify_round_trip_and_key_files(tmp_path):
    signer = generate_signing_key()
    write_private_key(signer, tmp_path / "signing.pem")
    write_public_key(signer.public_key, tmp_path / "signing.pub.pem")
    assert (tmp_path / "signing.pem").stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        write_private_key(signer, tmp_path / "signing.pem")
    reloaded = load_signer(tmp_path / "signing.pem")
    assert (
        reloaded.key_id
        == signer.key_id
        == key_id_for(load_public_key(tmp_path / "signing.pub.pem"))
    )
    trusted = TrustedKeys.from_pem_files([tmp_path / "signing.pub.pem"])
    cmd = make_command(sequence=1, issued_at=T0)
    envelope = reloaded.sign(cmd)
    assert trusted.verify(envelope) == cmd
    assert trusted.verify(envelope.SerializeToString()) == cmd


def test_other_key_and_tampering_are_refused():
    signer, other = generate_signing_key(), generate_signing_key()
    trusted = TrustedKeys([signer.public_key])
    cmd = make_command(sequence=1, issued_at=T0)
    with pytest.raises(SignatureRejectedError) as exc:
        trusted.verify(other.sign(cmd))
    assert exc.value.failure is SignatureFailure.UNKNOWN_KEY
    # a key that claims the trusted key's id still fails the signature check
    forged = other.sign(cmd)
    forged.key_id = signer.key_id
    with pytest.raises(SignatureRejectedError) as exc:
        trusted.verify(forged)
    assert exc.value.failure is SignatureFailure.BAD_SIGNATURE
    envelope = signer.sign(cmd)
    cmd.set_temp_basal.rate_u_per_h = 12.0
    envelope.command = cmd.SerializeToString()
    with pytest.raises(SignatureRejectedError) as exc:
        trusted.verify(envelope)
    assert exc.value.failure is SignatureFailure.BAD_SIGNATURE
    with pytest.raises(SignatureRejectedError) as exc:
        trusted.verify(b"\xff\xff\xff")
    assert exc.value.failure is SignatureFailure.MALFORMED


def test_signer_refuses_incomplete_commands():
    signer = generate_signing_key()
    cmd = make_command(sequence=1, issued_at=T0)
    cmd.ClearField("action")
    with pytest.raises(ValueError, match="action"):
        signer.sign(cmd)
