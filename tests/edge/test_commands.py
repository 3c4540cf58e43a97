"""The command gate end to end against a fake pump: what reaches the pump, and what never does."""

import random
from datetime import timedelta

import pytest

from edge.commands import CommandGate, ExecutionState
from edge.drivers.base import (
    BolusShape,
    CommandAck,
    DeliveryUnconfirmedError,
    PumpRefusedError,
    PumpStatusSnapshot,
)
from edge.limits import AGE_GROUP_MAXIMA, AgeGroup
from edge.uncertain import UncertainDeliveryTracker
from edge.verify import CommandVerifier, RejectionReason
from services.runtime.clock import FixedClock
from services.runtime.command_signing import TrustedKeys, generate_signing_key
from tests.edge._commands import DEVICE, MANUAL, PATIENT, T0, SkewedClock, make_command, sign


class FakePump:
    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.executed: list[tuple[str, float]] = []
        self.fail_next: Exception | None = None

    def snapshot(self, **overrides) -> PumpStatusSnapshot:
        fields = {
            "pump_time": self.clock.current,
            "reservoir_u": 150.0,
            "battery_pct": 80.0,
            "suspended": False,
            "scheduled_basal_u_per_h": 0.8,
            "temp_basal_u_per_h": None,
            "temp_basal_remaining_min": 0,
            "bolus_in_progress": False,
            "last_history_sequence": -1,
        }
        fields.update(overrides)
        return PumpStatusSnapshot(**fields)  # type: ignore[arg-type]

    def _ack(self, what: str, amount: float) -> CommandAck:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            if isinstance(exc, DeliveryUnconfirmedError):
                self.executed.append((what, amount))  # it did reach the pump
            raise exc
        self.executed.append((what, amount))
        return CommandAck(self.clock.current, accepted_u=amount if what == "bolus" else None)

    async def status(self):
        return self.snapshot()

    async def history_since(self, after_sequence):
        return []

    async def set_temp_basal(self, rate_u_per_h, duration_min):
        return self._ack("temp", rate_u_per_h)

    async def cancel_temp_basal(self):
        return self._ack("cancel", 0.0)

    async def bolus(self, shape: BolusShape):
        return self._ack("bolus", shape.insulin_u)

    async def suspend(self):
        return self._ack("suspend", 0.0)

    async def resume(self):
        return self._ack("resume", 0.0)


@pytest.fixture
def world(tmp_path):
    signer = generate_signing_key()
    true = FixedClock(T0)
    clock = SkewedClock(true)
    verifier = CommandVerifier(
        tmp_path / "v.db",
        TrustedKeys([signer.public_key]),
        device_id=DEVICE,
        patient_id=PATIENT,
        clock=clock,
    )
    tracker = UncertainDeliveryTracker(tmp_path / "u.db")
    gate = CommandGate(verifier, AGE_GROUP_MAXIMA[AgeGroup.CHILD], tracker)
    yield gate, signer, true, clock, FakePump(true), tracker
    verifier.close()
    tracker.close()


async def run(gate, pump, envelope, **kwargs):
    verdict = gate.admit(envelope, pump=pump.snapshot(), **kwargs)
    if not verdict.accepted:
        return verdict.reason, None
    outcome = await gate.execute(verdict, pump)
    return outcome.reason, outcome


async def test_valid_commands_all_execute_and_attacks_never_do(world):
    gate, signer, true, clock, pump, _tracker = world
    rng = random.Random(11)
    valid, captured = [], []
    for i in range(1000):
        envelope = sign(
            signer, make_command(sequence=i + 1, issued_at=true.current, rate_u_per_h=1.0)
        )
        true.advance(rng.uniform(0, 5))
        clock.skew_s = rng.uniform(-85, 30)
        reason, outcome = await run(gate, pump, envelope)
        assert outcome is not None, reason
        assert outcome.state is ExecutionState.EXECUTED
        valid.append(envelope)
        true.advance(300)
    assert len(pump.executed) == 1000
    # re-sent captured commands, with the hub clock anywhere within ±120 s
    for envelope in valid:
        clock.skew_s = rng.uniform(-120, 120)
        reason, outcome = await run(gate, pump, envelope)
        assert outcome is None
        captured.append(reason)
    # one flipped byte in fresh envelopes
    clock.skew_s = 0
    for i in range(500):
        flipped = bytearray(sign(signer, make_command(sequence=2000 + i, issued_at=true.current)))
        flipped[rng.randrange(len(flipped))] ^= rng.randrange(1, 256)
        reason, outcome = await run(gate, pump, bytes(flipped))
        assert outcome is None
        true.advance(60)
    assert len(pump.executed) == 1000  # nothing beyond the 1,000 valid commands reached the pump
    assert set(captured) <= {RejectionReason.DUPLICATE, RejectionReason.CLOCK_SKEW}


async def test_limits_uncertainty_and_pump_state(world):
    gate, signer, true, _clock, pump, tracker = world
    now = true.current
    too_high = sign(signer, make_command(sequence=1, issued_at=now, rate_u_per_h=2.5))
    assert (await run(gate, pump, too_high))[0] is RejectionReason.HARD_LIMIT
    bolus = sign(
        signer,
        make_command(
            sequence=2,
            issued_at=now,
            bolus_u=1.0,
            origin=MANUAL,
            lifetime_s=300,
            automatic_bolus=False,
        ),
    )
    verdict = gate.admit(bolus, pump=pump.snapshot(bolus_in_progress=True))
    assert verdict.reason is RejectionReason.BOLUS_IN_PROGRESS
    # the pump takes a temp basal but the acknowledgement is lost
    pump.fail_next = DeliveryUnconfirmedError("ack timeout")
    reason, outcome = await run(gate, pump, sign(signer, make_command(sequence=3, issued_at=now)))
    assert outcome.state is ExecutionState.UNCERTAIN
    assert tracker.automatic_dosing_paused
    more = sign(signer, make_command(sequence=4, issued_at=now, rate_u_per_h=1.5))
    assert (await run(gate, pump, more))[0] is RejectionReason.DELIVERY_UNCERTAIN
    zero = sign(signer, make_command(sequence=5, issued_at=now, rate_u_per_h=0.0))
    assert (await run(gate, pump, zero))[1].state is ExecutionState.EXECUTED
    pump.fail_next = PumpRefusedError("occlusion")
    manual = sign(
        signer,
        make_command(sequence=6, issued_at=now, rate_u_per_h=0.5, origin=MANUAL, lifetime_s=300),
    )
    reason, outcome = await run(gate, pump, manual)
    assert outcome.state is ExecutionState.REJECTED
    assert reason is RejectionReason.PUMP_ERROR


async def test_automatic_dose_decided_before_a_newer_bolus_is_refused(world):
    gate, signer, true, _clock, pump, _tracker = world
    now = true.current
    cmd = make_command(sequence=1, issued_at=now, rate_u_per_h=1.5)
    cmd.pump_history_as_of.FromDatetime(now - timedelta(minutes=10))
    status = pump.snapshot(last_bolus_at=now - timedelta(minutes=2))
    verdict = gate.admit(sign(signer, cmd), pump=status)
    assert verdict.reason is RejectionReason.BOLUS_IN_PROGRESS
    fresh = make_command(sequence=2, issued_at=now, rate_u_per_h=1.5)
    fresh.pump_history_as_of.FromDatetime(now - timedelta(minutes=1))
    assert gate.admit(sign(signer, fresh), pump=status).accepted
    zero = make_command(sequence=3, issued_at=now, rate_u_per_h=0.0)  # reducing: always fine
    assert gate.admit(sign(signer, zero), pump=status).accepted


async def test_deadline_passes_between_admit_and_execute(world):
    gate, signer, true, _clock, pump, _tracker = world
    verdict = gate.admit(
        sign(signer, make_command(sequence=1, issued_at=true.current)), pump=pump.snapshot()
    )
    assert verdict.accepted
    true.advance(61)
    outcome = await gate.execute(verdict, pump)
    assert outcome.state is ExecutionState.REJECTED
    assert outcome.reason is RejectionReason.EXPIRED
    assert pump.executed == []
    true.advance(timedelta(seconds=1).total_seconds())
