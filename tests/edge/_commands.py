"""Builders shared by the edge tests: signed pump commands and a skewable hub clock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from langerhans.device.v1 import device_pb2

from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner

PATIENT = "patient-1"
DEVICE = "hub-1"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AUTOMATIC = device_pb2.PumpCommandOrigin.PUMP_COMMAND_ORIGIN_AUTOMATIC
MANUAL = device_pb2.PumpCommandOrigin.PUMP_COMMAND_ORIGIN_MANUAL


@dataclass
class SkewedClock:
    """The hub's clock: true time plus a settable wall-clock skew; monotonic follows true time."""

    true: FixedClock
    skew_s: float = 0.0

    def now(self) -> datetime:
        return self.true.current + timedelta(seconds=self.skew_s)

    def monotonic_s(self) -> float:
        return self.true.current.timestamp()

    async def sleep(self, duration_s: float) -> None:  # pragma: no cover - not used
        self.true.advance(duration_s)


def make_command(
    *,
    sequence: int,
    issued_at: datetime,
    lifetime_s: float = 60.0,
    origin: int = AUTOMATIC,
    device_id: str = DEVICE,
    patient_id: str = PATIENT,
    rate_u_per_h: float | None = 1.2,
    bolus_u: float | None = None,
    automatic_bolus: bool = True,
) -> device_pb2.PumpCommand:
    cmd = device_pb2.PumpCommand(
        command_id=str(uuid.uuid4()),
        patient_id=patient_id,
        device_id=device_id,
        sequence=sequence,
        origin=origin,  # type: ignore[arg-type]
        issued_by="dosing-engine",
    )
    cmd.issued_at.FromDatetime(issued_at)
    cmd.expires_at.FromDatetime(issued_at + timedelta(seconds=lifetime_s))
    if bolus_u is not None:
        cmd.deliver_bolus.insulin_u = bolus_u
        cmd.deliver_bolus.immediate_pct = 100
        cmd.deliver_bolus.automatic = automatic_bolus
    elif rate_u_per_h is not None:
        cmd.set_temp_basal.rate_u_per_h = rate_u_per_h
        cmd.set_temp_basal.duration_min = 30
    else:
        cmd.cancel_temp_basal.SetInParent()
    return cmd


def sign(signer: CommandSigner, cmd: device_pb2.PumpCommand) -> bytes:
    """The envelope as it travels on the wire."""
    return signer.sign(cmd).SerializeToString()
