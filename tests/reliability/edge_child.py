"""A hub's command path in a process of its own, for `test_edge_kill.py` to SIGKILL.

It runs the real pieces — `CommandVerifier`, hard limits, `UncertainDeliveryTracker`,
`CommandGate` — on state files in a directory, in front of a pump whose memory is a file: the
pump is a separate device and survives a crash of the hub. The pump writes its history record
before it answers (the window in which a kill leaves the hub not knowing). Lines on stdin:

    CMD <hex of a SignedPumpCommand>  → "RESULT <command id> <executed|rejected|uncertain> <reason>"
    RECONCILE                         → "RECONCILED <settled> <still uncertain>"

On start it prints "READY <uncertain commands found>". The clock is the shared accelerated one
(LANGERHANS_CLOCK_* variables), so the reconciliation window passes in seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from langerhans.device.v1 import device_pb2

from edge.commands import CommandGate
from edge.drivers.base import (
    BolusShape,
    CommandAck,
    PumpEventKind,
    PumpHistoryEvent,
    PumpStatusSnapshot,
)
from edge.limits import AgeGroup, load_limits, provision_limits
from edge.uncertain import UncertainDeliveryTracker
from edge.verify import CommandVerifier
from services.runtime.clock import AcceleratedClock
from services.runtime.command_signing import TrustedKeys, load_public_key

DEVICE, PATIENT = "hub-kill", "patient-kill"
# The pump answers this long after it took the bolus (real seconds): the kill window.
ACK_DELAY_S = 0.5


class FilePump:
    """A pump whose history is an append-only, fsynced file."""

    def __init__(self, path: Path, clock: AcceleratedClock) -> None:
        self.path, self.clock = path, clock

    def history(self) -> list[PumpHistoryEvent]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            d = json.loads(line)
            events.append(PumpHistoryEvent(d["sequence"], datetime.fromisoformat(d["timestamp"]),
                                           PumpEventKind(d["kind"]), d["amount_u"]))  # fmt: skip
        return events

    def status(self) -> PumpStatusSnapshot:
        history = self.history()
        return PumpStatusSnapshot(
            pump_time=self.clock.now(), reservoir_u=200.0, battery_pct=80.0, suspended=False,
            scheduled_basal_u_per_h=0.8, temp_basal_u_per_h=None, temp_basal_remaining_min=0,
            bolus_in_progress=False, last_history_sequence=len(history) - 1,
            last_bolus_at=None,
        )  # fmt: skip

    async def bolus(self, shape: BolusShape) -> CommandAck:
        now = self.clock.now()
        sequence = len(self.history())
        record = {
            "sequence": sequence,
            "timestamp": now.isoformat(),
            "kind": PumpEventKind.BOLUS_PROGRAMMED.value,
            "amount_u": shape.insulin_u,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        await asyncio.sleep(ACK_DELAY_S)  # delivered; the answer is still on its way
        return CommandAck(
            pump_time=now, accepted_u=shape.insulin_u, reference=str(record["sequence"])
        )


def main() -> int:
    state = Path(sys.argv[1])
    clock = AcceleratedClock(
        speed=float(os.environ["LANGERHANS_CLOCK_SPEED"]),
        sim_start=datetime.fromisoformat(os.environ["LANGERHANS_CLOCK_SIM_START"]),
        real_start_epoch_s=float(os.environ["LANGERHANS_CLOCK_REAL_START_EPOCH_S"]),
    )
    limits_path = state / "limits.json"
    if not limits_path.exists():
        provision_limits(limits_path, AgeGroup.ADULT)
    verifier = CommandVerifier(
        state / "verify.db", TrustedKeys([load_public_key(state / "signing.pub")]),
        device_id=DEVICE, patient_id=PATIENT, clock=clock,
    )  # fmt: skip
    tracker = UncertainDeliveryTracker(state / "uncertain.db")
    gate = CommandGate(verifier, load_limits(limits_path), tracker)
    pump = FilePump(state / "pump-history.jsonl", clock)
    print(f"READY {len(tracker.uncertain())}", flush=True)
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "CMD":
            envelope = device_pb2.SignedPumpCommand.FromString(bytes.fromhex(arg))
            verdict = gate.admit(envelope, pump=pump.status(), iob_u=0.5)
            command_id = verdict.command.command_id if verdict.command else "?"
            if not verdict.accepted:
                reason = verdict.reason.value if verdict.reason else "?"
                print(f"RESULT {command_id} rejected {reason}", flush=True)
                continue
            outcome = asyncio.run(gate.execute(verdict, pump))  # type: ignore[arg-type]
            reason = outcome.reason.value if outcome.reason else "-"
            print(f"RESULT {command_id} {outcome.state.value} {reason}", flush=True)
        elif word == "RECONCILE":
            # History is complete up to the pump's now: wait until every uncertain command's
            # window (sent + 210 s) lies in the past, as the agent's polling would.
            pending = tracker.uncertain()
            if pending:
                latest = max(p.sent_at for p in pending) + timedelta(seconds=211)
                while clock.now() < latest:
                    time.sleep(0.05)
            settled = tracker.reconcile(pump.history(), clock.now())
            print(f"RECONCILED {len(settled)} {len(tracker.uncertain())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
