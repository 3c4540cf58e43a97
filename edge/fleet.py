"""A fleet of simulated hubs in one process: each a virtual person, their simulated pump and CGM,
and a full edge agent with its own enrolment, stores and mutual-TLS stream.

Enrolment bootstrap (development only): each new hub asks the device gateway's service port
for a one-time token with the development admin token (accepted only from loopback and only
when the gateway runs with environment=development), then enrols over the TLS enrolment port
like a real hub. Identities persist under `var/edge/<hub>/`, so a restarted fleet reconnects
as the same hubs and resumes its outboxes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from edge.agent import AgentConfig, EdgeAgent
from edge.drivers.simulated import SimCgm, SimPump
from edge.hub import LIMITS_AGE, agent_config, ensure_enrolled
from edge.limits import load_limits, provision_limits
from edge.settings import EdgeSettings
from sim.drivers import SimulatedPerson
from sim.person import AgeGroup, VirtualPerson, make_person

__all__ = [
    "SimulatedHub",
    "build_simulated_hub",
    "ensure_enrolled",
    "fleet_person",
    "fleet_person_id",
    "run_fleet",
]

log = logging.getLogger(__name__)

_AGES: tuple[AgeGroup, ...] = ("adult", "adolescent", "child")


@dataclass
class SimulatedHub:
    name: str
    person: SimulatedPerson
    pump: SimPump
    cgm: SimCgm
    agent: EdgeAgent


def fleet_person_id(index: int, name_prefix: str = "sim-hub") -> str:
    """The patient id of the fleet's hub `index` (the platform's people are sim-person-NNNN)."""
    # other prefixes (tests, benches) get people of their own, so their data never mixes with
    # a running platform's
    person_prefix = "sim-person" if name_prefix == "sim-hub" else f"{name_prefix}-person"
    return f"{person_prefix}-{index:04d}"


def fleet_person(index: int, name_prefix: str = "sim-hub") -> VirtualPerson:
    """The virtual person behind hub `index`: the same index always gives the same person, so
    the gateway's demo seeding derives their therapy settings from the very person simulated."""
    age: AgeGroup = _AGES[index % len(_AGES)]
    return make_person(fleet_person_id(index, name_prefix), age, np.random.default_rng([index, 7]))


async def build_simulated_hub(
    settings: EdgeSettings,
    index: int,
    *,
    ack_loss_rate: float = 0.0,
    config: AgentConfig | None = None,
    name_prefix: str = "sim-hub",
) -> SimulatedHub:
    name = f"{name_prefix}-{index:04d}"
    directory = settings.state_root / name
    clock = settings.clock()
    person = fleet_person(index, name_prefix)
    age = person.age_group
    sim_person = SimulatedPerson(person, clock, seed=index)
    identity = await ensure_enrolled(settings, directory, f"{name}-serial", person.person_id)
    limits_path = directory / "limits.json"
    limits = (
        load_limits(limits_path)
        if limits_path.exists()
        else provision_limits(limits_path, LIMITS_AGE[age])
    )
    pump = SimPump(sim_person, serial=f"{name}-pump", ack_loss_rate=ack_loss_rate, seed=index)
    cgm = SimCgm(sim_person, sensor_id=f"{name}-cgm")
    agent = EdgeAgent(
        identity=identity,
        hub_addr=settings.resolved_hub_addr,
        clock=clock,
        pump=pump,
        cgm=cgm,
        limits=limits,
        config=config or agent_config(settings),
        pump_serial=pump.serial,
        pump_model=pump.model,
        cgm_model=cgm.model,
        sensor_id=cgm.sensor_id,
    )
    return SimulatedHub(name, sim_person, pump, cgm, agent)


async def run_fleet(settings: EdgeSettings, size: int, stop: asyncio.Event) -> None:
    hubs: list[SimulatedHub] = []
    for i in range(size):
        while not stop.is_set():
            try:
                hubs.append(await build_simulated_hub(settings, i))
                break
            except (
                Exception
            ) as exc:  # gateway not up yet: retry (the supervisor starts us together)
                log.info("hub %d not enrolled yet (%s); retrying", i, exc)
                await asyncio.sleep(2.0)
    log.info("fleet running", extra={"hubs": len(hubs)})
    try:
        await asyncio.gather(*(hub.agent.run(stop) for hub in hubs))
    finally:
        for hub in hubs:
            hub.agent.close()
