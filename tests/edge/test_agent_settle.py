"""The hub settles commands the gateway could not: from its own records, never by guessing.

The gateway offers a command again after a reconnect when it has no final outcome for it. The
hub's verifier refuses the copy (DUPLICATE); the agent answers with what it knows about the
command itself. And after a restart, reconciliation still sees the pump history it read before.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from langerhans.device.v1 import device_pb2

from edge.agent import AgentConfig, EdgeAgent
from edge.client import HubIdentity
from edge.drivers.simulated import SimCgm, SimPump
from edge.limits import AgeGroup, provision_limits
from edge.outbox import RecordKind
from edge.uncertain import DeliveryState
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner, generate_signing_key
from sim.drivers import SimulatedPerson
from sim.person import make_person
from tests.device_gateway.harness import make_command

S = device_pb2.PumpCommandState
R = device_pb2.PumpCommandRejectionReason
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


class Hub:
    """An agent over a simulated pump; `restart()` makes a new agent on the same state."""

    def __init__(self, tmp_path: Path, clock: FixedClock, ack_loss_rate: float) -> None:
        self.signer: CommandSigner = generate_signing_key()
        raw = self.signer.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.identity = HubIdentity(
            "hub-test", "person-test", "serial", tmp_path, {self.signer.key_id: raw}
        )
        self.clock = clock
        self.person = SimulatedPerson(
            make_person("person-test", "adult", np.random.default_rng(3)), clock, seed=3
        )
        self.pump = SimPump(self.person, serial="pump-1", ack_loss_rate=ack_loss_rate, seed=11)
        self.limits = provision_limits(tmp_path / "limits.json", AgeGroup.ADULT)
        self.agent = self._agent()

    def _agent(self) -> EdgeAgent:
        return EdgeAgent(
            identity=self.identity,
            hub_addr="127.0.0.1:9",
            clock=self.clock,
            pump=self.pump,
            cgm=SimCgm(self.person, sensor_id="cgm-1"),
            limits=self.limits,
            config=AgentConfig(),
        )

    def restart(self) -> None:
        self.agent.close()
        self.agent = self._agent()

    def command(
        self, sequence: int, rate_u_per_h: float = 0.8
    ) -> tuple[device_pb2.PumpCommand, device_pb2.SignedPumpCommand]:
        return make_command(
            self.signer, device_id="hub-test", patient_id="person-test", sequence=sequence,
            now=self.clock.now(), rate_u_per_h=rate_u_per_h,
        )  # fmt: skip

    def outcomes(self, command_id: str) -> list[device_pb2.PumpCommandOutcome]:
        out = []
        for record in self.agent.outbox.peek(limit=10_000):
            if record.kind is RecordKind.COMMAND_OUTCOME:
                outcome = device_pb2.PumpCommandOutcome.FromString(record.payload)
                if outcome.command_id == command_id:
                    out.append(outcome)
        return out

    def temp_basals_started(self) -> int:
        return sum(1 for e in self.person.pump.history if e.kind == "temp_basal")


def test_a_reoffered_copy_is_answered_with_the_commands_state(tmp_path: Path) -> None:
    hub = Hub(tmp_path, FixedClock(START), ack_loss_rate=0.0)

    async def scenario() -> None:
        await hub.agent.poll()
        executed, signed = hub.command(1)
        await hub.agent.on_command(signed)
        started = hub.temp_basals_started()
        await hub.agent.on_command(signed)  # the gateway offers it again after a reconnect
        last = hub.outcomes(executed.command_id)[-1]
        assert (last.state, last.detail.startswith("settled on a re-offered copy")) == (
            S.PUMP_COMMAND_STATE_EXECUTED,
            True,
        )
        assert hub.temp_basals_started() == started  # answered, not run again

        # accepted, then the hub stopped before telling the pump (its outcome never written)
        abandoned, signed_abandoned = hub.command(2)
        assert hub.agent.verifier.verify(signed_abandoned).accepted
        hub.restart()
        await hub.agent.on_command(signed_abandoned)
        last = hub.outcomes(abandoned.command_id)[-1]
        assert (last.state, last.rejection_reason) == (
            S.PUMP_COMMAND_STATE_REJECTED,
            R.PUMP_COMMAND_REJECTION_REASON_PUMP_UNREACHABLE,
        )
        hub.clock.advance(120)  # once past its expiry the same answer reads EXPIRED
        await hub.agent.on_command(signed_abandoned)
        assert hub.outcomes(abandoned.command_id)[-1].state == S.PUMP_COMMAND_STATE_EXPIRED

        # refused by the hard limits, the refusal lost in a crash: the refusal is repeated
        too_high, signed_high = hub.command(3, rate_u_per_h=40.0)
        assert not hub.agent.gate.admit(signed_high, pump=None).accepted
        await hub.agent.on_command(signed_high)
        last = hub.outcomes(too_high.command_id)[-1]
        assert (last.state, last.rejection_reason) == (
            S.PUMP_COMMAND_STATE_REJECTED,
            R.PUMP_COMMAND_REJECTION_REASON_HARD_LIMIT,
        )
        assert hub.temp_basals_started() == started

    asyncio.run(scenario())
    hub.agent.close()


def test_lost_ack_then_restart_reconciles_from_history_read_before(tmp_path: Path) -> None:
    hub = Hub(tmp_path, FixedClock(START), ack_loss_rate=1.0)

    async def scenario() -> None:
        await hub.agent.poll()
        command, signed = hub.command(1)
        await hub.agent.on_command(signed)  # the pump runs it; its answer is lost
        assert hub.agent.tracker.state(command.command_id) is DeliveryState.UNCERTAIN
        assert hub.temp_basals_started() == 1
        # a poll had read (and forwarded) the pump's record while the command was in flight,
        # then the hub stopped before reconciling
        history = await hub.pump.history_since(-1)
        hub.agent._history_seq = history[-1].sequence
        hub.agent._save_cursors()
        hub.restart()
        assert hub.agent.tracker.state(command.command_id) is DeliveryState.UNCERTAIN
        # a re-offered copy meanwhile: still uncertain, and not run again
        await hub.agent.on_command(signed)
        assert hub.outcomes(command.command_id)[-1].state == S.PUMP_COMMAND_STATE_UNCERTAIN
        hub.clock.advance(600)  # the reconciliation window is complete
        await hub.agent.poll()
        # delivered per the pump's history — not "absent" because memory was lost
        assert hub.agent.tracker.state(command.command_id) is DeliveryState.DELIVERED
        last = hub.outcomes(command.command_id)[-1]
        assert (last.state, last.detail) == (
            S.PUMP_COMMAND_STATE_EXECUTED,
            "reconciled from pump history",
        )
        assert hub.temp_basals_started() == 1
        assert not hub.agent.tracker.automatic_dosing_paused

    asyncio.run(scenario())
    hub.agent.close()
