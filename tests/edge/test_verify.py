"""Hub command verification: replays, re-sends, flipped bytes, skew, binding, persistence."""

import random
from collections import Counter
from datetime import timedelta

import pytest

from edge.verify import CommandVerifier, RejectionReason
from services.runtime.clock import FixedClock
from services.runtime.command_signing import TrustedKeys, generate_signing_key
from tests.edge._commands import DEVICE, MANUAL, PATIENT, T0, SkewedClock, make_command, sign

CYCLE_S = 300  # the loop issues a command every 5 minutes


@pytest.fixture
def signer():
    return generate_signing_key()


@pytest.fixture
def hub(tmp_path, signer):
    true = FixedClock(T0)
    clock = SkewedClock(true)
    verifier = CommandVerifier(
        tmp_path / "verify.db",
        TrustedKeys([signer.public_key]),
        device_id=DEVICE,
        patient_id=PATIENT,
        clock=clock,
    )
    yield verifier, clock, true
    verifier.close()


def test_valid_commands_are_all_accepted(hub, signer):
    verifier, clock, true = hub
    rng = random.Random(1)
    accepted = 0
    for i in range(1000):
        issued = true.current
        envelope = sign(signer, make_command(sequence=i + 1, issued_at=issued))
        true.advance(rng.uniform(0, 5))  # transit
        # hub clock behind by up to 85 s or ahead by up to 30 s; pump clock within ±2 s
        clock.skew_s = rng.uniform(-85, 30)
        verifier.observe_pump_clock(true.current + timedelta(seconds=rng.uniform(-2, 2)))
        verdict = verifier.verify(envelope)
        accepted += verdict.accepted
        assert verdict.accepted, verdict
        assert verifier.recheck(verdict).accepted
        true.advance(CYCLE_S)
    assert accepted == 1000


def test_replayed_after_expiry_never_executes(hub, signer):
    """1,000 captured commands withheld and replayed after expiry, hub skew up to ±120 s."""
    verifier, clock, true = hub
    rng = random.Random(2)
    executed = 0
    reasons: Counter[RejectionReason | None] = Counter()
    sequence = 0
    for _ in range(1000):
        # a normal cycle: a valid command arrives and is accepted
        sequence += 1
        clock.skew_s = rng.uniform(-30, 20)
        verifier.observe_pump_clock(true.current)
        assert verifier.verify(
            sign(signer, make_command(sequence=sequence, issued_at=true.current))
        ).accepted
        # the next command is captured in transit and never delivered
        true.advance(rng.uniform(1, CYCLE_S - 1))
        sequence += 1
        captured = sign(signer, make_command(sequence=sequence, issued_at=true.current))
        # ... and replayed 5–600 s after its expiry, while the hub clock is off by up to 120 s
        true.advance(60 + rng.uniform(5, 600))
        clock.skew_s = rng.uniform(-120, 120)
        verifier.observe_pump_clock(true.current + timedelta(seconds=rng.uniform(-2, 2)))
        verdict = verifier.verify(captured)
        executed += verdict.accepted
        reasons[verdict.reason] += 1
        true.advance(CYCLE_S)
    assert executed == 0
    assert set(reasons) <= {RejectionReason.EXPIRED, RejectionReason.CLOCK_SKEW}


def test_replayed_after_expiry_on_a_fresh_hub_never_executes(tmp_path, signer):
    """No history at all: only the hub clock (±120 s off) and the pump clock (±2 s) to go by."""
    rng = random.Random(3)
    executed = 0
    for i in range(200):
        true = FixedClock(T0 + timedelta(hours=i))
        clock = SkewedClock(true, rng.uniform(-120, 120))
        verifier = CommandVerifier(
            tmp_path / f"fresh{i}.db",
            TrustedKeys([signer.public_key]),
            device_id=DEVICE,
            patient_id=PATIENT,
            clock=clock,
        )
        captured = sign(signer, make_command(sequence=1, issued_at=true.current))
        true.advance(60 + rng.uniform(5, 600))
        verifier.observe_pump_clock(true.current + timedelta(seconds=rng.uniform(-2, 2)))
        executed += verifier.verify(captured).accepted
        verifier.close()
    assert executed == 0


def test_resent_captured_commands_never_execute_twice(tmp_path, hub, signer):
    verifier, clock, true = hub
    rng = random.Random(4)
    captured = []
    for i in range(1000):
        envelope = sign(signer, make_command(sequence=i + 1, issued_at=true.current))
        assert verifier.verify(envelope).accepted
        captured.append(envelope)
        # re-sent straight away (inside the command's lifetime), hub skew anywhere in ±120 s
        clock.skew_s = rng.uniform(-120, 120)
        verdict = verifier.verify(envelope)
        assert not verdict.accepted
        assert verdict.reason is RejectionReason.DUPLICATE
        clock.skew_s = 0
        true.advance(CYCLE_S)
    verifier.close()
    # after a restart of the hub, the same 1,000 again
    reopened = CommandVerifier(
        tmp_path / "verify.db",
        TrustedKeys([signer.public_key]),
        device_id=DEVICE,
        patient_id=PATIENT,
        clock=clock,
    )
    executed = sum(reopened.verify(e).accepted for e in captured)
    # a week later the ids are forgotten, and the commands are still refused (expired)
    true.advance(7 * 86400)
    assert reopened.prune_seen() == 1000
    executed += sum(reopened.verify(e).accepted for e in captured)
    reopened.close()
    assert executed == 0


def test_one_flipped_byte_never_executes(hub, signer):
    verifier, _clock, true = hub
    rng = random.Random(5)
    executed = 0
    for i in range(500):
        envelope = bytearray(sign(signer, make_command(sequence=i + 1, issued_at=true.current)))
        pristine = bytes(envelope)
        envelope[rng.randrange(len(envelope))] ^= rng.randrange(1, 256)
        executed += verifier.verify(bytes(envelope)).accepted
        # the tampered copy did not burn the real one
        assert verifier.verify(pristine).accepted
        true.advance(CYCLE_S)
    assert executed == 0


def test_binding_origin_lifetime_and_future(hub, signer):
    verifier, _clock, true = hub
    now = true.current
    other_device = make_command(sequence=1, issued_at=now, device_id="hub-2")
    assert verifier.verify(sign(signer, other_device)).reason is RejectionReason.WRONG_DEVICE
    other_patient = make_command(sequence=1, issued_at=now, patient_id="patient-2")
    assert verifier.verify(sign(signer, other_patient)).reason is RejectionReason.WRONG_DEVICE
    too_long = make_command(sequence=1, issued_at=now, lifetime_s=61)
    assert verifier.verify(sign(signer, too_long)).reason is RejectionReason.MALFORMED
    manual_ok = make_command(sequence=1, issued_at=now, lifetime_s=300, origin=MANUAL)
    assert verifier.verify(sign(signer, manual_ok)).accepted
    big_auto_bolus = make_command(sequence=2, issued_at=now, bolus_u=3, automatic_bolus=False)
    assert verifier.verify(sign(signer, big_auto_bolus)).reason is RejectionReason.NOT_PERMITTED
    future = make_command(sequence=3, issued_at=now + timedelta(seconds=95))
    assert verifier.verify(sign(signer, future)).reason is RejectionReason.CLOCK_SKEW
    old_seq = make_command(sequence=1, issued_at=now)
    assert verifier.verify(sign(signer, old_seq)).reason is RejectionReason.STALE_SEQUENCE
    other_key = generate_signing_key()
    fine = make_command(sequence=9, issued_at=now)
    assert verifier.verify(sign(other_key, fine)).reason is RejectionReason.UNKNOWN_KEY
    assert RejectionReason.WRONG_DEVICE.to_proto() == 7


def test_hub_behind_gets_no_extra_life(hub, signer):
    verifier, clock, true = hub
    clock.skew_s = -80  # hub 80 s behind the cloud
    cmd = make_command(sequence=1, issued_at=true.current)
    verdict = verifier.verify(sign(signer, cmd))
    assert verdict.accepted
    # on the hub's clock the command "expires" 140 s from now; it gets 60 s from receipt
    true.advance(59)
    assert verifier.recheck(verdict).accepted
    true.advance(2)
    assert verifier.recheck(verdict).reason is RejectionReason.EXPIRED


def test_time_floor_and_sequence_survive_restart(tmp_path, signer):
    true = FixedClock(T0)
    clock = SkewedClock(true)
    path = tmp_path / "v.db"
    keys = TrustedKeys([signer.public_key])
    v = CommandVerifier(path, keys, device_id=DEVICE, patient_id=PATIENT, clock=clock)
    assert v.verify(sign(signer, make_command(sequence=7, issued_at=true.current))).accepted
    v.close()
    true.advance(100)
    clock.skew_s = -3600  # the hub's wall clock stepped back an hour during the restart
    v = CommandVerifier(path, keys, device_id=DEVICE, patient_id=PATIENT, clock=clock)
    # the floor remembers at least the last verified issued_at
    assert v.effective_now() >= T0
    late = make_command(sequence=8, issued_at=T0 - timedelta(seconds=61))
    assert v.verify(sign(signer, late)).reason is RejectionReason.EXPIRED
    stale = make_command(sequence=7, issued_at=T0)
    assert v.verify(sign(signer, stale)).reason is RejectionReason.STALE_SEQUENCE
    v.close()


def test_pump_clock_far_off_refuses_commands(hub, signer):
    verifier, _clock, true = hub
    verifier.observe_pump_clock(true.current - timedelta(seconds=120))
    cmd = make_command(sequence=1, issued_at=true.current)
    assert verifier.verify(sign(signer, cmd)).reason is RejectionReason.CLOCK_SKEW
    # a wild clock cannot push the persisted floor far ahead
    assert not verifier.observe_time(true.current + timedelta(days=1))
