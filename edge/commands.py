"""The hub's command gate: the one path from a signed envelope to the pump.

`admit` runs, in order: verification (edge/verify.py: signature, dedupe, binding, lifetime,
time, sequence), local hard limits (edge/limits.py), the uncertain-delivery pause
(edge/uncertain.py) and the pump's own state (suspended, bolus running, reservoir). `execute`
re-checks the deadline, records the command write-ahead, tells the pump, and turns the
driver's answer into one of EXECUTED, REJECTED or UNCERTAIN. Every refusal carries a
`RejectionReason` that maps onto `PumpCommandRejectionReason`.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import UTC

from langerhans.device.v1 import device_pb2

from edge.drivers.base import (
    BolusShape,
    CommandAck,
    PumpDriver,
    PumpRefusedError,
    PumpStatusSnapshot,
)
from edge.limits import HardLimits, check_command
from edge.uncertain import UncertainDeliveryTracker
from edge.verify import CommandVerifier, RejectionReason, Verdict

__all__ = ["CommandGate", "ExecutionOutcome", "ExecutionState"]


class ExecutionState(enum.Enum):
    EXECUTED = "executed"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class ExecutionOutcome:
    command_id: str
    state: ExecutionState
    reason: RejectionReason | None = None
    detail: str = ""
    delivered_u: float = 0.0
    reference: str = ""


class CommandGate:
    def __init__(
        self,
        verifier: CommandVerifier,
        limits: HardLimits,
        tracker: UncertainDeliveryTracker,
    ) -> None:
        self._verifier = verifier
        self._limits = limits
        self._tracker = tracker

    def admit(
        self,
        envelope: device_pb2.SignedPumpCommand | bytes,
        *,
        pump: PumpStatusSnapshot | None,
        iob_u: float | None = None,
    ) -> Verdict:
        """Whether the envelope may go to the pump now (nothing is sent here)."""
        if pump is not None:
            self._verifier.observe_pump_clock(pump.pump_time)
        verdict = self._verifier.verify(envelope)
        if not verdict.accepted or verdict.command is None:
            return verdict
        verdict = self._admit_verified(verdict.command, pump, iob_u, verdict)
        if not verdict.accepted and verdict.command is not None and verdict.reason is not None:
            # remembered with the command id, so a later copy is answered with this refusal
            self._verifier.note_refusal(verdict.command.command_id, verdict.reason)
        return verdict

    def _admit_verified(
        self,
        command: device_pb2.PumpCommand,
        pump: PumpStatusSnapshot | None,
        iob_u: float | None,
        verdict: Verdict,
    ) -> Verdict:
        violation = check_command(
            self._limits,
            command,
            iob_u=iob_u,
            scheduled_basal_u_per_h=pump.scheduled_basal_u_per_h if pump else None,
        )
        if violation is not None:
            return Verdict.reject(RejectionReason.HARD_LIMIT, violation.detail, command)
        blocked = self._tracker.blocking_reason(command)
        if blocked is not None:
            return Verdict.reject(RejectionReason.DELIVERY_UNCERTAIN, blocked, command)
        action = command.WhichOneof("action")
        if pump is None and action != "suspend":
            return Verdict.reject(
                RejectionReason.PUMP_UNREACHABLE, "no current pump status", command
            )
        if pump is not None:
            stale = _bolus_since_decision(command, pump)
            if stale is not None:
                return Verdict.reject(RejectionReason.BOLUS_IN_PROGRESS, stale, command)
            if pump.suspended and action not in ("resume", "suspend", "cancel_temp_basal"):
                return Verdict.reject(RejectionReason.PUMP_SUSPENDED, "pump suspended", command)
            if action == "deliver_bolus":
                if pump.bolus_in_progress:
                    return Verdict.reject(
                        RejectionReason.BOLUS_IN_PROGRESS, "a bolus is running", command
                    )
                if pump.reservoir_u < command.deliver_bolus.insulin_u:
                    return Verdict.reject(
                        RejectionReason.RESERVOIR_INSUFFICIENT,
                        f"{pump.reservoir_u} U left",
                        command,
                    )
        return verdict

    async def execute(self, verdict: Verdict, pump: PumpDriver) -> ExecutionOutcome:
        """Send an admitted command to the pump exactly once."""
        verdict = self._verifier.recheck(verdict)
        command = verdict.command
        if command is None:
            raise ValueError("execute() needs an admitted command")
        if not verdict.accepted:
            return ExecutionOutcome(
                command.command_id, ExecutionState.REJECTED, verdict.reason, verdict.detail
            )
        self._tracker.begin(command, self._verifier.effective_now())
        try:
            ack = await _send(command, pump)
        except PumpRefusedError as exc:
            self._tracker.refused(command.command_id, str(exc))
            return ExecutionOutcome(
                command.command_id, ExecutionState.REJECTED, RejectionReason.PUMP_ERROR, str(exc)
            )
        except asyncio.CancelledError:
            self._tracker.unconfirmed(command.command_id, "cancelled while talking to the pump")
            raise
        except Exception as exc:  # any other failure leaves the outcome unknown
            self._tracker.unconfirmed(command.command_id, f"{type(exc).__name__}: {exc}")
            return ExecutionOutcome(
                command.command_id,
                ExecutionState.UNCERTAIN,
                RejectionReason.DELIVERY_UNCERTAIN,
                f"no confirmation from the pump: {exc}",
            )
        self._tracker.confirmed(command.command_id, ack.accepted_u)
        return ExecutionOutcome(
            command.command_id,
            ExecutionState.EXECUTED,
            delivered_u=ack.accepted_u or 0.0,
            reference=ack.reference,
        )


def _bolus_since_decision(command: device_pb2.PumpCommand, pump: PumpStatusSnapshot) -> str | None:
    """An automatic dose decided before the pump's newest bolus is stale (brief §6)."""
    if command.origin != device_pb2.PumpCommandOrigin.PUMP_COMMAND_ORIGIN_AUTOMATIC:
        return None
    action = command.WhichOneof("action")
    adds_insulin = action == "deliver_bolus" or (
        action == "set_temp_basal" and command.set_temp_basal.rate_u_per_h > 0
    )
    if not adds_insulin or pump.last_bolus_at is None:
        return None
    if not command.HasField("pump_history_as_of"):
        return "automatic dose without the pump history it was decided on"
    as_of = command.pump_history_as_of.ToDatetime(tzinfo=UTC)
    if pump.last_bolus_at > as_of:
        return f"the pump has a bolus at {pump.last_bolus_at.isoformat()} newer than the decision"
    return None


async def _send(command: device_pb2.PumpCommand, pump: PumpDriver) -> CommandAck:
    action = command.WhichOneof("action")
    if action == "set_temp_basal":
        t = command.set_temp_basal
        return await pump.set_temp_basal(t.rate_u_per_h, t.duration_min)
    if action == "cancel_temp_basal":
        return await pump.cancel_temp_basal()
    if action == "deliver_bolus":
        b = command.deliver_bolus
        return await pump.bolus(BolusShape(b.insulin_u, b.immediate_pct, b.extended_duration_min))
    if action == "suspend":
        return await pump.suspend()
    if action == "resume":
        return await pump.resume()
    raise PumpRefusedError(f"unknown action {action!r}")
