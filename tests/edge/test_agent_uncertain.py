"""The agent with a simulated pump that loses 10 % of its acknowledgements (1,000 commands)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization

from edge.agent import AgentConfig, EdgeAgent, momentum_projection_mg_dl
from edge.client import HubIdentity
from edge.drivers.base import CommandAck
from edge.drivers.simulated import SimCgm, SimPump
from edge.limits import AgeGroup, provision_limits
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner, generate_signing_key
from sim.drivers import SimulatedPerson
from sim.person import make_person
from tests.device_gateway.harness import make_command

N_COMMANDS = 1_000


def _agent(
    tmp_path: Path, clock: FixedClock, ack_loss_rate: float
) -> tuple[EdgeAgent, SimPump, CommandSigner]:
    signer = generate_signing_key()
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    identity = HubIdentity("hub-test", "person-test", "serial", tmp_path, {signer.key_id: raw})
    person = SimulatedPerson(
        make_person("person-test", "adult", np.random.default_rng(3)), clock, seed=3
    )
    pump = SimPump(person, serial="pump-1", ack_loss_rate=ack_loss_rate, seed=11)
    limits = provision_limits(tmp_path / "limits.json", AgeGroup.ADULT)
    agent = EdgeAgent(
        identity=identity,
        hub_addr="127.0.0.1:9",
        clock=clock,
        pump=pump,
        cgm=SimCgm(person, sensor_id="cgm-1"),
        limits=limits,
        config=AgentConfig(),
    )
    return agent, pump, signer


def test_lost_acks_pause_dosing_and_are_never_resent(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 3, 1, 6, 0, tzinfo=UTC))
    agent, pump, signer = _agent(tmp_path, clock, ack_loss_rate=0.10)
    pump_calls: list[str] = []
    original = pump.set_temp_basal

    async def counting(rate_u_per_h: float, duration_min: int) -> CommandAck:
        pump_calls.append(current[0])
        return await original(rate_u_per_h, duration_min)

    pump.set_temp_basal = counting  # type: ignore[method-assign]
    current = [""]
    arrived_while_uncertain = 0
    paused_while_uncertain = 0
    resent_reached_pump = 0
    uncertain_seen = 0

    async def scenario() -> None:
        nonlocal \
            arrived_while_uncertain, \
            paused_while_uncertain, \
            resent_reached_pump, \
            uncertain_seen
        await agent.poll()
        sequence = 0
        for i in range(N_COMMANDS):
            sequence += 1
            command, signed = make_command(
                signer, device_id="hub-test", patient_id="person-test", sequence=sequence,
                now=clock.now(), rate_u_per_h=0.5 + (i % 10) * 0.1,
            )  # fmt: skip
            blocked_before = bool(agent.tracker.uncertain())
            calls_before = len(pump_calls)
            current[0] = command.command_id
            await agent.on_command(signed)
            if blocked_before:
                arrived_while_uncertain += 1
                paused_while_uncertain += len(pump_calls) == calls_before
            if agent.tracker.uncertain():
                uncertain_seen += 1
                # the gateway (or an attacker) re-sends the very same envelope: never again
                calls_before = len(pump_calls)
                await agent.on_command(signed)
                resent_reached_pump += len(pump_calls) - calls_before
                # and a new automatic command while uncertain must not reach the pump either
                sequence += 1
                _, other = make_command(
                    signer, device_id="hub-test", patient_id="person-test", sequence=sequence,
                    now=clock.now(),
                )  # fmt: skip
                arrived_while_uncertain += 1
                calls_before = len(pump_calls)
                current[0] = "other"
                await agent.on_command(other)
                paused_while_uncertain += len(pump_calls) == calls_before
            # pump history is read on the next poll; reconciliation needs a settled window
            clock.advance(300)
            await agent.poll()

    asyncio.run(scenario())
    still_uncertain = agent.tracker.uncertain()
    agent.close()
    print(
        f"acks lost={pump.acks_lost} uncertain={uncertain_seen} arrived while uncertain="
        f"{arrived_while_uncertain} paused={paused_while_uncertain} re-sent={resent_reached_pump}"
    )
    assert pump.acks_lost >= 60  # ~10 % of the commands that reached the pump
    assert uncertain_seen == pump.acks_lost
    assert resent_reached_pump == 0
    assert arrived_while_uncertain > 0
    assert paused_while_uncertain == arrived_while_uncertain
    # every command id reached the pump at most once
    ids = [c for c in pump_calls if c != "other"]
    assert len(ids) == len(set(ids))
    assert "other" not in pump_calls
    # reconciliation released the pause: the hub is not stuck
    assert not still_uncertain


def test_momentum_projection_sees_a_falling_glucose() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    from datetime import timedelta

    falling = [(t0 + timedelta(minutes=5 * k), 120.0 - 3.0 * 5 * k) for k in range(4)]
    projected = momentum_projection_mg_dl(falling, 30.0)
    assert projected is not None
    assert projected < 80.0
    flat = [(t0 + timedelta(minutes=5 * k), 110.0) for k in range(4)]
    assert momentum_projection_mg_dl(flat, 30.0) == 110.0
    assert momentum_projection_mg_dl(falling[:1], 30.0) is None
