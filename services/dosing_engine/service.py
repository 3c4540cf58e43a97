"""The dosing engine's decisions: per-person state in, decision and signed commands out.

`DosingEngine` works on one storage session (the consumer's transaction); it never commits
and never publishes: outgoing events go into the outbox through `events.py`. Safety beyond the
kernel's rules (defence in depth):

- a reading older than 12 min at the time of deciding, or a backfilled one, never raises
  insulin: no micro-bolus and no temp above the scheduled basal is sent (a backlog after an
  outage gives no catch-up doses);
- a reading that already has a decision is not decided again, and every automatic command has
  a deterministic idempotency key (patient, reading, action) with a unique constraint, so a
  replay never sends a second command;
- an issued micro-bolus counts as insulin on board at once (before the pump confirms it), and
  is removed only if the pump rejects it or it expires undelivered;
- a command whose outcome is uncertain blocks automatic dosing until pump history reconciles it;
- an increase (micro-bolus or temp above the schedule) needs the forecast minimum to clear the
  suspend threshold by a margin for the insulin on board (`kernels.increase_margin`, the same
  rule the in-silico bench runs); otherwise the low-glucose-suspend decision is used.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Final

from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2, therapy_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as svc_pb2
from langerhans.dosing.v1 import dosing_pb2
from langerhans.pump.v1 import pump_pb2

from kernels.increase_margin import (
    DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    check_iob_fraction,
    decide_with_margin,
)
from services.dosing_engine.model import (
    STALE_AFTER_S,
    decision_input,
    decision_to_proto,
    idempotency_key,
    to_timestamp,
    ts_seconds,
)
from services.dosing_engine.repository import CommandRow, DoseRow, Repository
from services.runtime.clock import Clock
from services.runtime.command_signing import CommandSigner

__all__ = [
    "COMMAND_LIFETIME_S",
    "HISTORY_S",
    "DosingEngine",
    "ReadingOutcome",
]

log = logging.getLogger(__name__)

HISTORY_S: Final = 24 * 3600
COMMAND_LIFETIME_S: Final = 60.0
_BOLUS, _TEMP, _SUSPEND = 1, 2, 3
_CMD_NAMESPACE: Final = uuid.UUID("9d3e51a2-64f7-4b0e-8c2a-71e5a0d3c6f4")
S = device_pb2


@dataclass(frozen=True, slots=True)
class ReadingOutcome:
    """What handling one reading produced (for the outbox and for tests)."""

    decision: dosing_pb2.DosingDecision | None
    commands: tuple[device_pb2.SignedPumpCommand, ...]
    skipped: str = ""  # why no decision was made ("duplicate", "backfill", "no settings", …)


class DosingEngine:
    def __init__(
        self,
        repo: Repository,
        clock: Clock,
        signer: CommandSigner,
        *,
        increase_margin_iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    ) -> None:
        self.repo = repo
        self.clock = clock
        self.signer = signer
        self.increase_margin_iob_fraction = check_iob_fraction(increase_margin_iob_fraction)

    # ------------------------------------------------------------------ inputs
    def on_settings(self, msg: therapy_pb2.TherapySettingsChanged) -> bool:
        s = msg.settings
        if not s.patient_id:
            return False
        return self.repo.put_settings(s.patient_id, s.version, s.SerializeToString())

    def on_pump_event(self, ev: pump_pb2.PumpEvent) -> None:
        repo, pid = self.repo, ev.patient_id
        st = repo.pump_state(pid)
        if ev.device_id:
            st.device_id = ev.device_id
        t = ts_seconds(ev.occurred_at)
        kind = ev.WhichOneof("event")
        if kind == "bolus_started":
            b = ev.bolus_started
            dose = repo.bolus_for_command(pid, b.command_id)
            key = dose.dose_key if dose is not None else f"bolus:{pid}:{b.bolus_id or ev.event_id}"
            repo.put_dose(
                pid,
                DoseRow(
                    key,
                    _BOLUS,
                    t,
                    float(b.extended_duration_min),
                    b.programmed_insulin_u,
                    0.0,
                    b.automatic,
                    b.command_id,
                    False,
                ),
            )
            st.bolus_in_progress = True
            st.last_bolus_s = max(st.last_bolus_s or t, t)
            if b.automatic:
                st.last_smb_s = max(st.last_smb_s or t, t)
        elif kind in ("bolus_delivered", "bolus_cancelled"):
            b2 = getattr(ev, kind)
            dose = repo.bolus_for_command(pid, b2.command_id) or repo.dose(
                f"bolus:{pid}:{b2.bolus_id}"
            )
            start = ts_seconds(b2.started_at) if kind == "bolus_delivered" else t
            if dose is None:
                dose = DoseRow(
                    f"bolus:{pid}:{b2.bolus_id or ev.event_id}",
                    _BOLUS,
                    start,
                    0.0,
                    0.0,
                    0.0,
                    b2.automatic,
                    b2.command_id,
                    False,
                )
                st.last_bolus_s = max(st.last_bolus_s or start, start)
            dose.insulin_u = b2.delivered_insulin_u
            repo.put_dose(pid, dose)
            st.bolus_in_progress = False
        elif kind == "temp_basal_started":
            tb = ev.temp_basal_started
            repo.close_open(pid, _TEMP, t)
            repo.put_dose(
                pid,
                DoseRow(
                    f"temp:{pid}:{ev.event_id}",
                    _TEMP,
                    t,
                    float(tb.duration_min),
                    0.0,
                    tb.rate_u_per_h,
                    tb.automatic,
                    tb.command_id,
                    True,
                ),
            )
            st.temp_rate_u_per_h = tb.rate_u_per_h
            st.temp_end_s = t + tb.duration_min * 60.0
        elif kind == "temp_basal_ended":
            repo.close_open(pid, _TEMP, t)
            st.temp_rate_u_per_h = None
            st.temp_end_s = 0.0
        elif kind == "delivery_suspended":
            repo.put_dose(
                pid,
                DoseRow(
                    f"suspend:{pid}:{ev.event_id}",
                    _SUSPEND,
                    t,
                    0.0,
                    0.0,
                    0.0,
                    False,
                    ev.delivery_suspended.command_id,
                    True,
                ),
            )
            st.suspended = True
            st.bolus_in_progress = False
        elif kind == "delivery_resumed":
            repo.close_open(pid, _SUSPEND, t)
            st.suspended = False
        elif kind == "carbs_entered":
            c = ev.carbs_entered
            repo.add_carbs(
                pid, f"carbs:{pid}:{ev.event_id}", t, c.carbs_g, float(c.absorption_min or 180)
            )
        elif kind == "history_reconciled":
            r = ev.history_reconciled
            st.uncertain_command_ids = " ".join(sorted(st.uncertain - {r.command_id}))
            dose = repo.bolus_for_command(pid, r.command_id)
            if dose is not None and r.result != pump_pb2.RECONCILIATION_RESULT_CONFIRMED:
                dose.insulin_u = r.delivered_insulin_u
                repo.put_dose(pid, dose)
        repo.put_pump_state(st)

    def on_outcome(self, out: device_pb2.PumpCommandOutcome) -> None:
        repo = self.repo
        cmd = repo.command(out.command_id)
        if cmd is None:
            return
        repo.set_command_state(cmd.command_id, out.state)
        st = repo.pump_state(cmd.patient_id)
        if out.state == S.PUMP_COMMAND_STATE_UNCERTAIN:
            st.uncertain_command_ids = " ".join(sorted(st.uncertain | {cmd.command_id}))
        elif out.state in (S.PUMP_COMMAND_STATE_REJECTED, S.PUMP_COMMAND_STATE_EXPIRED):
            st.uncertain_command_ids = " ".join(sorted(st.uncertain - {cmd.command_id}))
            dose = repo.bolus_for_command(cmd.patient_id, cmd.command_id)
            if dose is not None and dose.dose_key.startswith("issued:"):
                repo.delete_dose(dose.dose_key)  # never reached the pump
        elif out.state == S.PUMP_COMMAND_STATE_EXECUTED:
            st.uncertain_command_ids = " ".join(sorted(st.uncertain - {cmd.command_id}))
        repo.put_pump_state(st)

    # ------------------------------------------------------------------ state → request
    def state_request(self, patient_id: str, now_s: float) -> svc_pb2.DecideRequest | None:
        """The person's whole state as a stateless `DecideRequest` (None without settings)."""
        repo = self.repo
        stored = repo.settings(patient_id)
        if stored is None:
            return None
        req = svc_pb2.DecideRequest(patient_id=patient_id)
        req.now.CopyFrom(to_timestamp(now_s))
        req.settings.ParseFromString(stored[1])
        since = now_s - HISTORY_S
        for payload in repo.readings_since(patient_id, since):
            req.cgm_history.add().ParseFromString(payload)
        for d in repo.doses_since(patient_id, since):
            duration = d.duration_min
            if d.open and d.kind == _SUSPEND:
                duration = max(5.0, (now_s - d.start_s) / 60.0)
            dose = req.doses.add(
                kind=d.kind,
                duration_min=round(duration),
                insulin_u=d.insulin_u,
                rate_u_per_h=d.rate_u_per_h,
                automatic=d.automatic,
                command_id=d.command_id,
            )
            dose.start_time.CopyFrom(to_timestamp(d.start_s))
        for eaten, grams, absorption in repo.carbs_since(patient_id, since):
            c = req.carbs.add(carbs_g=grams, absorption_min=round(absorption))
            c.eaten_at.CopyFrom(to_timestamp(eaten))
        st = repo.pump_state(patient_id)
        p = req.pump_state
        p.suspended = st.suspended
        if st.temp_rate_u_per_h is not None and st.temp_end_s > now_s:
            p.temp_basal_rate_u_per_h = st.temp_rate_u_per_h
            p.temp_basal_remaining_min = int((st.temp_end_s - now_s) // 60)
        p.bolus_in_progress = st.bolus_in_progress
        if st.last_bolus_s is not None:
            p.last_bolus_at.CopyFrom(to_timestamp(st.last_bolus_s))
        if st.last_smb_s is not None:
            p.last_micro_bolus_at.CopyFrom(to_timestamp(st.last_smb_s))
        p.uncertain_command_ids.extend(sorted(st.uncertain))
        return req

    # ------------------------------------------------------------------ a new reading
    def on_reading(self, reading: cgm_pb2.CgmReading) -> ReadingOutcome:
        repo, pid, rid = self.repo, reading.patient_id, reading.reading_id
        if not pid or not rid or not reading.HasField("measured_at"):
            return ReadingOutcome(None, (), "incomplete reading")
        if repo.has_decision(pid, rid):
            return ReadingOutcome(None, (), "duplicate")
        measured_s = ts_seconds(reading.measured_at)
        newest = repo.newest_reading_s(pid)
        if not repo.has_reading(pid, rid):
            repo.add_reading(pid, rid, measured_s, reading.SerializeToString())
        if reading.device_id:
            st = repo.pump_state(pid)
            if st.device_id != reading.device_id:
                st.device_id = reading.device_id
                repo.put_pump_state(st)
        if reading.backfill or (newest is not None and measured_s < newest):
            return ReadingOutcome(None, (), "backfill")  # history only; never doses on its own
        now_s = self.clock.now().timestamp()
        req = self.state_request(pid, now_s)
        if req is None:
            return ReadingOutcome(None, (), "no settings")
        decision = decide_with_margin(decision_input(req), self.increase_margin_iob_fraction)
        msg = decision_to_proto(decision, req, reading_id=rid)
        commands = self._enact(
            msg, decision.enact, now_s - measured_s, now_s, decision.scheduled_basal_u_per_h
        )
        repo.add_decision(
            msg.decision_id,
            pid,
            rid,
            decided_s=now_s,
            enacted=msg.enacted,
            payload=msg.SerializeToString(),
        )
        repo.prune(pid, now_s - HISTORY_S - 3600)
        return ReadingOutcome(msg, commands)

    def _enact(
        self,
        msg: dosing_pb2.DosingDecision,
        enact: bool,
        age_s: float,
        now_s: float,
        scheduled: float,
    ) -> tuple[device_pb2.SignedPumpCommand, ...]:
        st = self.repo.pump_state(msg.patient_id)
        if not enact or msg.mode == common_pb2.LOOP_MODE_OPEN_LOOP or not st.device_id:
            return ()
        rec = msg.recommendation
        stale = age_s > STALE_AFTER_S or age_s < -5 * 60
        actions: list[tuple[str, device_pb2.PumpCommand]] = []
        which = rec.WhichOneof("basal")
        if which in ("set_temp_basal", "suspend"):
            rate = rec.set_temp_basal.rate_u_per_h if which == "set_temp_basal" else 0.0
            minutes = (
                rec.set_temp_basal.duration_min
                if which == "set_temp_basal"
                else rec.suspend.duration_min
            )
            if not (stale and rate > scheduled + 1e-9):
                cmd = device_pb2.PumpCommand()
                cmd.set_temp_basal.rate_u_per_h = rate
                cmd.set_temp_basal.duration_min = min(int(minutes) or 30, 30 if stale else 120)
                actions.append(("temp_basal", cmd))
        elif which == "cancel_temp_basal":
            cmd = device_pb2.PumpCommand()
            cmd.cancel_temp_basal.SetInParent()
            actions.append(("cancel_temp_basal", cmd))
        if (
            rec.HasField("micro_bolus")
            and rec.micro_bolus.insulin_u > 0
            and not stale
            and msg.mode == common_pb2.LOOP_MODE_CLOSED_LOOP_SMB
        ):
            cmd = device_pb2.PumpCommand()
            cmd.deliver_bolus.insulin_u = rec.micro_bolus.insulin_u
            cmd.deliver_bolus.kind = common_pb2.BOLUS_KIND_STANDARD
            cmd.deliver_bolus.immediate_pct = 100.0
            cmd.deliver_bolus.automatic = True
            actions.append(("micro_bolus", cmd))
        signed: list[device_pb2.SignedPumpCommand] = []
        for action, cmd in actions:
            key = idempotency_key(msg.patient_id, msg.reading_id, action)
            if self.repo.command_by_key(key) is not None:
                continue  # this reading already produced this command
            s = self.issue(
                cmd,
                key,
                action,
                msg=msg,
                device_id=st.device_id,
                now_s=now_s,
                origin=device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC,
                issued_by="dosing-engine",
            )
            signed.append(s)
            msg.command_ids.append(device_pb2.PumpCommand.FromString(s.command).command_id)
            if action == "micro_bolus":
                # counts as insulin on board now, so the next reading cannot stack on it
                command_id = msg.command_ids[-1]
                self.repo.put_dose(
                    msg.patient_id,
                    DoseRow(
                        f"issued:{command_id}",
                        _BOLUS,
                        now_s,
                        0.0,
                        cmd.deliver_bolus.insulin_u,
                        0.0,
                        True,
                        command_id,
                        False,
                    ),
                )
                st = self.repo.pump_state(msg.patient_id)
                st.last_smb_s = now_s
                st.last_bolus_s = max(st.last_bolus_s or now_s, now_s)
                self.repo.put_pump_state(st)
        msg.enacted = bool(signed)
        return tuple(signed)

    def issue(
        self,
        cmd: device_pb2.PumpCommand,
        key: str,
        action: str,
        *,
        msg: dosing_pb2.DosingDecision | None,
        device_id: str,
        now_s: float,
        origin: int,
        issued_by: str,
        patient_id: str = "",
    ) -> device_pb2.SignedPumpCommand:
        """Sign a command with a fresh device sequence and record it (caller's transaction)."""
        pid = msg.patient_id if msg is not None else patient_id
        cmd.command_id = str(uuid.uuid5(_CMD_NAMESPACE, key))
        cmd.patient_id = pid
        cmd.device_id = device_id
        cmd.sequence = self.repo.next_sequence(device_id)
        cmd.issued_at.CopyFrom(to_timestamp(now_s))
        cmd.expires_at.CopyFrom(to_timestamp(now_s + COMMAND_LIFETIME_S))
        cmd.origin = origin  # type: ignore[assignment]
        cmd.issued_by = issued_by
        if msg is not None:
            cmd.decision_id = msg.decision_id
        st = self.repo.pump_state(pid)
        if st.last_bolus_s is not None:
            cmd.pump_history_as_of.CopyFrom(to_timestamp(st.last_bolus_s))
        signed = self.signer.sign(cmd)
        self.repo.add_command(
            CommandRow(
                cmd.command_id,
                key,
                pid,
                device_id,
                cmd.sequence,
                msg.decision_id if msg is not None else "",
                action,
                now_s,
                now_s + COMMAND_LIFETIME_S,
                S.PUMP_COMMAND_STATE_QUEUED,
                signed.SerializeToString(),
            )
        )
        return signed
