"""A hub assembled from its settings and drivers, without the simulator.

`ensure_enrolled` (enrol once, then reuse the stored identity), `agent_config` and
`build_remote_hub`: the agent with the pump and sensor of a separate device process
(`edge.devsim`, reached through `edge.drivers.remote`). This is what `langerhans edge --devices`
runs; the in-process simulated fleet (`edge.fleet`) builds on the same pieces.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.agent import AgentConfig, EdgeAgent
from edge.client import HubIdentity, dev_enrollment_token, enroll, load_identity
from edge.drivers.remote import DeviceLink, RemoteCgm, RemotePump
from edge.limits import AgeGroup, load_limits, provision_limits
from edge.settings import EdgeSettings

__all__ = ["LIMITS_AGE", "agent_config", "build_remote_hub", "ensure_enrolled"]

log = logging.getLogger(__name__)

# the simulator's age groups → the hard-limit tables provisioned for them
LIMITS_AGE = {"child": AgeGroup.CHILD, "adolescent": AgeGroup.TEEN, "adult": AgeGroup.ADULT}


async def ensure_enrolled(
    settings: EdgeSettings, directory: Path, hub_serial: str, patient_id: str
) -> HubIdentity:
    identity = load_identity(directory)
    if identity is not None:
        return identity
    token = settings.enrollment_token or await dev_enrollment_token(
        settings.device_gateway_addr, patient_id, settings.dev_admin_token
    )
    ca_pem = settings.resolved_gateway_ca_path.read_bytes()
    identity = await enroll(settings.resolved_enroll_addr, ca_pem, token, hub_serial, directory)
    log.info(
        "hub enrolled", extra={"device_id": identity.device_id, "patient_id": identity.patient_id}
    )
    return identity


def agent_config(settings: EdgeSettings) -> AgentConfig:
    return AgentConfig(
        poll_interval_s=settings.poll_interval_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        offline_after_s=settings.offline_after_s,
        suspend_threshold_mg_dl=settings.suspend_threshold_mg_dl,
        suspend_horizon_min=settings.suspend_horizon_min,
    )


async def build_remote_hub(
    settings: EdgeSettings, socket_path: Path, *, enroll_only: bool = False
) -> EdgeAgent | None:
    """The agent for the devices served at `socket_path`; None after `enroll_only`."""
    link = DeviceLink(str(socket_path))
    info = await link.call("info")
    name = str(info["hub_name"])
    directory = settings.state_root / name
    identity = await ensure_enrolled(settings, directory, f"{name}-serial", info["patient_id"])
    limits_path = directory / "limits.json"
    limits = (
        load_limits(limits_path)
        if limits_path.exists()
        else provision_limits(limits_path, LIMITS_AGE[info["age_group"]])
    )
    if enroll_only:
        link.close()
        return None
    return EdgeAgent(
        identity=identity,
        hub_addr=settings.resolved_hub_addr,
        clock=settings.clock(),
        pump=RemotePump(link),
        cgm=RemoteCgm(link),
        limits=limits,
        config=agent_config(settings),
        pump_serial=info["pump_serial"],
        pump_model=info["pump_model"],
        cgm_model=info["cgm_model"],
        sensor_id=info["sensor_id"],
    )
