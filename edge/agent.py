"""The edge agent loop: drivers → durable outbox → gateway, and signed commands → pump.

Every poll (on the injected clock): read pump status and new pump history, reconcile uncertain
commands against that history, read new CGM readings, write all of it to the outbox (durable
before it is sent), and every minute a heartbeat. The link (`edge.client.HubLink`) streams the
outbox in order and hands signed commands to `on_command`, which runs the command gate
(verify → hard limits → uncertain pause → pump state) and reports each step as an outcome
through the same outbox.

Offline (no cloud message for `offline_after_s`): nothing is sent to the pump on the cloud's
behalf — the running temp basal simply runs out (automatic temps are at most 2 h, enforced by
the hard limits) and the pump returns to its schedule. The local suspend-before-low stays
armed: if the momentum projection of the last CGM readings falls below the threshold within
the horizon, the hub suspends the pump itself, and resumes when glucose has recovered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2
from langerhans.pump.v1 import pump_pb2

from edge.client import HubIdentity, HubLink
from edge.commands import CommandGate, ExecutionState
from edge.drivers.base import (
    CgmDriver,
    CgmReading,
    PumpDriver,
    PumpEventKind,
    PumpHistoryEvent,
    PumpStatusSnapshot,
)
from edge.limits import HardLimits
from edge.outbox import Outbox, RecordKind
from edge.uncertain import DeliveryState, UncertainDeliveryTracker
from edge.verify import SKEW_TOLERANCE_S, CommandVerifier, RejectionReason
from services.runtime.clock import Clock

__all__ = ["AgentConfig", "EdgeAgent", "momentum_projection_mg_dl"]

log = logging.getLogger(__name__)

S = device_pb2.PumpCommandState
HubDosing = device_pb2.HubDosingState
Link = device_pb2.BleLinkState
SOFTWARE_VERSION = "langerhans-edge/0.1"
_RESUME_MARGIN_MG_DL = 20.0


@dataclass(frozen=True)
class AgentConfig:
    poll_interval_s: float = 30.0
    heartbeat_interval_s: float = 60.0
    offline_after_s: float = 300.0
    suspend_threshold_mg_dl: float = 80.0
    suspend_horizon_min: float = 30.0


def momentum_projection_mg_dl(
    readings: list[tuple[datetime, float]], horizon_min: float
) -> float | None:
    """Linear projection of glucose `horizon_min` ahead from the last 15 min of readings.

    Least-squares slope over the readings of the last 15 minutes (at least two, ≥ 5 min
    apart); None when there are too few recent readings to say anything.
    """
    if len(readings) < 2:
        return None
    last_t = readings[-1][0]
    recent = [(t, g) for t, g in readings if last_t - t <= timedelta(minutes=15)]
    if len(recent) < 2 or (recent[-1][0] - recent[0][0]) < timedelta(minutes=5):
        return None
    xs = [(t - last_t).total_seconds() / 60.0 for t, _ in recent]
    ys = [g for _, g in recent]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return ys[-1] + slope * horizon_min


def _from_ts(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


class EdgeAgent:
    """One hub: its drivers, stores, command gate and link to the cloud."""

    def __init__(
        self,
        *,
        identity: HubIdentity,
        hub_addr: str,
        clock: Clock,
        pump: PumpDriver,
        cgm: CgmDriver,
        limits: HardLimits,
        config: AgentConfig,
        pump_serial: str = "",
        pump_model: str = "",
        cgm_model: str = "",
        sensor_id: str = "",
    ) -> None:
        directory = identity.directory
        self.identity = identity
        self.clock = clock
        self.pump = pump
        self.cgm = cgm
        self.config = config
        self._pump_info = (pump_model, pump_serial, cgm_model, sensor_id)
        self.outbox = Outbox(directory / "outbox.sqlite3")
        self.verifier = CommandVerifier(
            directory / "verify.sqlite3",
            identity.trusted_keys(),
            device_id=identity.device_id,
            patient_id=identity.patient_id,
            clock=clock,
        )
        self.tracker = UncertainDeliveryTracker(directory / "delivery.sqlite3")
        self.gate = CommandGate(self.verifier, limits, self.tracker)
        self.link = HubLink(
            identity,
            hub_addr,
            self.outbox,
            clock,
            on_command=self.on_command,
            hello=self._hello,
            on_server_time=self._observe_server_time,
        )
        self._cursor_path = directory / "cursors.json"
        cursors = json.loads(self._cursor_path.read_text()) if self._cursor_path.exists() else {}
        self._cgm_seq: int = cursors.get("cgm", -1)
        self._history_seq: int = cursors.get("history", -1)
        self._last_command_sequence: int = cursors.get("command_sequence", 0)
        self._recent: deque[tuple[datetime, float]] = deque(maxlen=12)
        self._history: deque[PumpHistoryEvent] = deque(maxlen=500)
        # The pump history read before a restart is gone from memory while the cursor is past
        # it; reconciling an uncertain command against the rest would call a delivered dose
        # absent. So with uncertain commands, the first poll reads the pump's history again.
        self._reread_history = bool(self.tracker.uncertain())
        self._pump_status: PumpStatusSnapshot | None = None
        self._pump_seen: datetime | None = None
        self._cgm_seen: datetime | None = None
        self._pump_link = Link.BLE_LINK_STATE_CONNECTING
        self._cgm_link = Link.BLE_LINK_STATE_CONNECTING
        self._skew_s = 0.0
        self._started_mono = time.monotonic()
        self._started_loop_s = time.monotonic()
        self._next_heartbeat: datetime | None = None
        self.local_suspend = False
        self._command_lock = asyncio.Lock()
        self.executed_commands: list[str] = []  # for tests and the bench: what reached the pump

    def close(self) -> None:
        self.outbox.close()
        self.verifier.close()
        self.tracker.close()

    # ------------------------------------------------------------------ state
    @property
    def cloud_reachable(self) -> bool:
        seen = self.link.last_cloud_message_mono_s
        if seen is None:
            # never heard from the cloud: count from start-up, so a hub that boots while the
            # gateway is starting does not act as if it had been offline for long
            seen = self._started_loop_s
        # real seconds since the last cloud message, scaled to the agent's clock
        elapsed_real = time.monotonic() - seen
        speed = getattr(self.clock, "speed", 1.0)
        return elapsed_real * speed < self.config.offline_after_s

    @property
    def dosing_state(self) -> int:
        if self.local_suspend:
            return HubDosing.HUB_DOSING_STATE_LOCAL_SUSPEND
        if self.tracker.automatic_dosing_paused:
            return HubDosing.HUB_DOSING_STATE_BLOCKED_UNCERTAIN
        if not self.cloud_reachable:
            return HubDosing.HUB_DOSING_STATE_OFFLINE_FALLBACK
        return HubDosing.HUB_DOSING_STATE_ACCEPTING_COMMANDS

    @property
    def clock_skew_flagged(self) -> bool:
        return abs(self._skew_s) > SKEW_TOLERANCE_S

    def _hello(self) -> gw_pb2.HubHello:
        model, serial, cgm_model, sensor = self._pump_info
        return gw_pb2.HubHello(
            device_id=self.identity.device_id,
            software_version=SOFTWARE_VERSION,
            last_command_sequence=self.last_command_sequence,
            outbox_first_sequence=self.link.acked_sequence + 1,
            pump_model=model,
            pump_serial=serial,
            cgm_model=cgm_model,
            sensor_id=sensor,
        )

    @property
    def last_command_sequence(self) -> int:
        """For the hello and heartbeats. The verifier's persisted sequence is committed before
        the pump is told, so no command above it ever reached the pump (the gateway relies on
        that); the cursor file may lag it after a crash."""
        return max(self._last_command_sequence, self.verifier.last_accepted_sequence())

    def _observe_server_time(self, server_time: Timestamp) -> None:
        self.verifier.observe_time(server_time.ToDatetime().replace(tzinfo=self.clock.now().tzinfo))

    def _save_cursors(self) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "cgm": self._cgm_seq,
                    "history": self._history_seq,
                    "command_sequence": self._last_command_sequence,
                }
            )
        )
        tmp.replace(self._cursor_path)

    def _telemetry(self, now: datetime) -> device_pb2.DeviceTelemetry:
        return device_pb2.DeviceTelemetry(
            patient_id=self.identity.patient_id,
            device_id=self.identity.device_id,
            recorded_at=_ts(now),
        )

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        link = asyncio.create_task(self.link.run(stop))
        try:
            while not stop.is_set():
                try:
                    await self.poll()
                except Exception:
                    log.exception("agent poll failed", extra={"device_id": self.identity.device_id})
                sleep = asyncio.create_task(self.clock.sleep(self.config.poll_interval_s))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({sleep, stopper}, return_when=asyncio.FIRST_COMPLETED)
                sleep.cancel()
                stopper.cancel()
        finally:
            await link

    async def poll(self) -> None:
        """One pass: pump, history, reconciliation, CGM, local safety, heartbeat."""
        now = self.clock.now()
        records: list[tuple[RecordKind, bytes]] = []
        await self._poll_pump(now, records)
        await self._poll_cgm(now, records)
        if records:
            self.outbox.enqueue_many(records)
            self._save_cursors()
        await self._local_safety(now)
        if self._next_heartbeat is None or now >= self._next_heartbeat:
            self.outbox.enqueue(RecordKind.HEARTBEAT, self.heartbeat(now).SerializeToString())
            self._next_heartbeat = now + timedelta(seconds=self.config.heartbeat_interval_s)
        self.link.wake()

    async def _poll_pump(self, now: datetime, records: list[tuple[RecordKind, bytes]]) -> None:
        try:
            status = await self.pump.status()
            if self._reread_history:
                earlier = await self.pump.history_since(-1)
                self._history.extend(e for e in earlier if e.sequence <= self._history_seq)
                self._reread_history = False
            history = await self.pump.history_since(self._history_seq)
        except Exception as exc:
            self._pump_link = Link.BLE_LINK_STATE_DISCONNECTED
            log.info("pump unreachable: %s", exc)
            return
        self._pump_link = Link.BLE_LINK_STATE_CONNECTED
        self._pump_seen = now
        self._pump_status = status
        self._skew_s = self.verifier.observe_pump_clock(status.pump_time)
        self._skew_s = -self._skew_s  # report pump − hub, as HubHeartbeat defines
        t = self._telemetry(now)
        ps = t.pump_status
        ps.reservoir_u = status.reservoir_u
        ps.battery_pct = status.battery_pct
        ps.suspended = status.suspended
        ps.scheduled_basal_rate_u_per_h = status.scheduled_basal_u_per_h
        ps.pump_time.CopyFrom(_ts(status.pump_time))
        ps.last_history_record_index = max(0, status.last_history_sequence)
        if status.temp_basal_u_per_h is not None:
            ps.temp_basal.rate_u_per_h = status.temp_basal_u_per_h
            ps.temp_basal.remaining_min = status.temp_basal_remaining_min
        records.append((RecordKind.PUMP_STATUS, t.SerializeToString()))
        _, serial, _, _ = self._pump_info
        for event in history:
            self._history.append(event)
            records.append(
                (
                    RecordKind.PUMP_HISTORY,
                    self._history_item(now, event, serial).SerializeToString(),
                )
            )
            self._history_seq = event.sequence
        # settle uncertain commands from everything the pump has told us so far
        for resolution in self.tracker.reconcile(list(self._history), status.pump_time):
            delivered = resolution.state is DeliveryState.DELIVERED
            records.append(
                (
                    RecordKind.COMMAND_OUTCOME,
                    self._outcome(
                        resolution.command_id,
                        S.PUMP_COMMAND_STATE_EXECUTED
                        if delivered
                        else S.PUMP_COMMAND_STATE_REJECTED,
                        now,
                        detail="reconciled from pump history",
                        delivered_u=resolution.delivered_u,
                        reason=0
                        if delivered
                        else device_pb2.PUMP_COMMAND_REJECTION_REASON_PUMP_ERROR,
                    ).SerializeToString(),
                )
            )

    def _history_item(
        self, now: datetime, event: PumpHistoryEvent, serial: str
    ) -> device_pb2.DeviceTelemetry:
        t = self._telemetry(now)
        e = t.pump_history_event
        e.event_id = f"{serial}:{event.sequence}"
        e.patient_id = self.identity.patient_id
        e.device_id = self.identity.device_id
        e.pump_serial = serial
        e.pump_record_index = event.sequence
        e.occurred_at.CopyFrom(_ts(event.timestamp))
        e.source = pump_pb2.PumpEventSource.PUMP_EVENT_SOURCE_PUMP_HISTORY
        if event.kind is PumpEventKind.BOLUS_PROGRAMMED:
            e.bolus_started.programmed_insulin_u = event.amount_u
            e.bolus_started.bolus_id = event.reference
        elif event.kind is PumpEventKind.BOLUS_DELIVERED:
            e.bolus_delivered.delivered_insulin_u = event.amount_u
        elif event.kind is PumpEventKind.TEMP_BASAL_STARTED:
            e.temp_basal_started.rate_u_per_h = event.amount_u
            e.temp_basal_started.duration_min = event.duration_min
        elif event.kind is PumpEventKind.TEMP_BASAL_ENDED:
            e.temp_basal_ended.SetInParent()
        elif event.kind is PumpEventKind.SUSPENDED:
            e.delivery_suspended.SetInParent()
        elif event.kind is PumpEventKind.RESUMED:
            e.delivery_resumed.SetInParent()
        elif event.kind is PumpEventKind.ALARM:
            e.pump_alarm_raised.SetInParent()
        return t

    async def _poll_cgm(self, now: datetime, records: list[tuple[RecordKind, bytes]]) -> None:
        try:
            readings = await self.cgm.readings_since(self._cgm_seq)
        except Exception as exc:
            self._cgm_link = Link.BLE_LINK_STATE_DISCONNECTED
            log.info("CGM unreachable: %s", exc)
            return
        self._cgm_link = Link.BLE_LINK_STATE_CONNECTED
        for reading in readings:
            records.append(
                (RecordKind.CGM_READING, self._cgm_item(now, reading).SerializeToString())
            )
            self._cgm_seq = reading.sequence
            self._cgm_seen = now
            if reading.glucose_mg_dl is not None:
                self._recent.append((reading.timestamp, reading.glucose_mg_dl))

    def _cgm_item(self, now: datetime, reading: CgmReading) -> device_pb2.DeviceTelemetry:
        t = self._telemetry(now)
        r = t.cgm_reading
        r.sensor_id = reading.sensor_id
        r.measured_at.CopyFrom(_ts(reading.timestamp))
        r.glucose.value = reading.glucose_mg_dl or 0.0
        r.glucose.unit = common_pb2.GlucoseUnit.GLUCOSE_UNIT_MG_DL
        r.time_offset_min = max(0, reading.sequence) * 5
        # readings stored while the cloud was away are backfill for the cloud
        r.backfill = reading.backfill or not self.cloud_reachable
        if reading.quality_pct is not None:
            r.sensor_quality_pct = reading.quality_pct
        return t

    def heartbeat(self, now: datetime) -> device_pb2.HubHeartbeat:
        hb = device_pb2.HubHeartbeat(
            hub_time=_ts(now),
            software_version=SOFTWARE_VERSION,
            uptime_s=int(time.monotonic() - self._started_mono),
            pump_link=self._pump_link,
            cgm_link=self._cgm_link,
            pump_clock_skew_s=self._skew_s,
            outbox_depth=self.outbox.depth,
            dosing_state=self.dosing_state,  # type: ignore[arg-type]
            uncertain_command_ids=[u.command_id for u in self.tracker.uncertain()],
            last_command_sequence=self.last_command_sequence,
        )
        if self._pump_seen is not None:
            hb.pump_last_seen_at.CopyFrom(_ts(self._pump_seen))
        if self._cgm_seen is not None:
            hb.cgm_last_seen_at.CopyFrom(_ts(self._cgm_seen))
        return hb

    # ------------------------------------------------------------------ local safety
    async def _local_safety(self, now: datetime) -> None:
        """Suspend-before-low while the cloud is away; resume once glucose has recovered."""
        readings = list(self._recent)
        if not readings or now - readings[-1][0] > timedelta(minutes=15):
            return  # no recent CGM: never act on stale data
        projected = momentum_projection_mg_dl(readings, self.config.suspend_horizon_min)
        current = readings[-1][1]
        threshold = self.config.suspend_threshold_mg_dl
        if not self.local_suspend and not self.cloud_reachable:
            if current < threshold or (projected is not None and projected < threshold):
                try:
                    await self.pump.suspend()
                except Exception as exc:
                    log.warning("local suspend-before-low failed: %s", exc)
                    return
                self.local_suspend = True
                log.warning(
                    "local suspend before low",
                    extra={"glucose_mg_dl": current, "projected_mg_dl": projected},
                )
        elif self.local_suspend:
            recovered = current >= threshold + _RESUME_MARGIN_MG_DL and (
                projected is None or projected >= threshold
            )
            if recovered:
                try:
                    await self.pump.resume()
                except Exception as exc:
                    log.warning("local resume failed: %s", exc)
                    return
                self.local_suspend = False

    # ------------------------------------------------------------------ commands
    def _outcome(
        self,
        command_id: str,
        state: int,
        now: datetime,
        *,
        sequence: int = 0,
        reason: int = 0,
        detail: str = "",
        delivered_u: float = 0.0,
        reference: str = "",
    ) -> device_pb2.PumpCommandOutcome:
        return device_pb2.PumpCommandOutcome(
            command_id=command_id,
            patient_id=self.identity.patient_id,
            device_id=self.identity.device_id,
            sequence=sequence,
            state=state,  # type: ignore[arg-type]
            rejection_reason=reason,  # type: ignore[arg-type]
            detail=detail[:500],
            delivered_insulin_u=delivered_u,
            occurred_at=_ts(now),
            bolus_id=reference,
        )

    def _known_outcome(
        self, command: device_pb2.PumpCommand, now: datetime
    ) -> device_pb2.PumpCommandOutcome:
        """The settled state of a command this hub has already seen, from its own records.

        Handed to the pump: the delivery tracker says (confirmed / delivered per pump history →
        EXECUTED; refused / absent from history → REJECTED; still unconfirmed → UNCERTAIN, and
        pump-history reconciliation reports the final state later). Never handed to the pump
        (refused by the gate, or accepted when the hub stopped before telling the pump): not
        executed — the stored refusal, or EXPIRED / REJECTED. Its id is burned, so it cannot
        run later either.
        """
        command_id, sequence = command.command_id, command.sequence
        prefix = "settled on a re-offered copy: "
        delivery = self.tracker.record(command_id)
        if delivery is not None:
            state_, delivered_u, detail = delivery
            if state_ in (DeliveryState.CONFIRMED, DeliveryState.DELIVERED):
                return self._outcome(
                    command_id, S.PUMP_COMMAND_STATE_EXECUTED, now, sequence=sequence,
                    detail=prefix + detail, delivered_u=delivered_u or 0.0,
                )  # fmt: skip
            if state_ in (DeliveryState.REFUSED, DeliveryState.ABSENT):
                return self._outcome(
                    command_id, S.PUMP_COMMAND_STATE_REJECTED, now, sequence=sequence,
                    reason=device_pb2.PUMP_COMMAND_REJECTION_REASON_PUMP_ERROR,
                    detail=prefix + detail,
                )  # fmt: skip
            return self._outcome(
                command_id, S.PUMP_COMMAND_STATE_UNCERTAIN, now, sequence=sequence,
                reason=device_pb2.PUMP_COMMAND_REJECTION_REASON_DELIVERY_UNCERTAIN,
                detail=prefix + f"{detail}; pump history will settle it",
            )  # fmt: skip
        seen = self.verifier.seen(command_id)
        refusal = seen[1] if seen is not None and not seen[0] else None
        if refusal is None:
            expired = _from_ts(command.expires_at) <= self.verifier.effective_now()
            refusal = RejectionReason.EXPIRED if expired else RejectionReason.PUMP_UNREACHABLE
            detail = "accepted, never handed to the pump (the hub stopped first)"
        else:
            detail = f"refused by the hub ({refusal.value})"
        state = (
            S.PUMP_COMMAND_STATE_EXPIRED
            if refusal is RejectionReason.EXPIRED
            else S.PUMP_COMMAND_STATE_REJECTED
        )
        return self._outcome(
            command_id, state, now, sequence=sequence, reason=refusal.to_proto(),
            detail=prefix + detail,
        )  # fmt: skip

    async def on_command(self, envelope: device_pb2.SignedPumpCommand) -> None:
        """Gate, execute once, report every step durably."""
        async with self._command_lock:
            verdict = self.gate.admit(envelope, pump=self._pump_status)
            command = verdict.command
            now = self.clock.now()
            if command is None:
                log.warning("refused an unauthentic or unreadable command: %s", verdict.detail)
                return  # nothing trustworthy to report against
            if verdict.reason is RejectionReason.DUPLICATE:
                # The gateway offers a command again after a reconnect when it has no final
                # outcome for it (its stream died, or this hub died mid-command). Answer with
                # what this hub knows about the command, never by running it again.
                outcome = self._known_outcome(command, now)
                self.outbox.enqueue(RecordKind.COMMAND_OUTCOME, outcome.SerializeToString())
                self.link.wake()
                return
            if not verdict.accepted:
                assert verdict.reason is not None
                state = (
                    S.PUMP_COMMAND_STATE_EXPIRED
                    if verdict.reason.value == "EXPIRED"
                    else S.PUMP_COMMAND_STATE_REJECTED
                )
                outcome = self._outcome(
                    command.command_id,
                    state,
                    now,
                    sequence=command.sequence,
                    reason=verdict.reason.to_proto(),
                    detail=verdict.detail,
                )
                self.outbox.enqueue(RecordKind.COMMAND_OUTCOME, outcome.SerializeToString())
                self.link.wake()
                return
            self._last_command_sequence = max(self._last_command_sequence, command.sequence)
            self._save_cursors()
            received = self._outcome(
                command.command_id, S.PUMP_COMMAND_STATE_RECEIVED, now, sequence=command.sequence
            )
            self.outbox.enqueue(RecordKind.COMMAND_OUTCOME, received.SerializeToString())
            result = await self.gate.execute(verdict, self.pump)
            state = {
                ExecutionState.EXECUTED: S.PUMP_COMMAND_STATE_EXECUTED,
                ExecutionState.REJECTED: S.PUMP_COMMAND_STATE_REJECTED,
                ExecutionState.UNCERTAIN: S.PUMP_COMMAND_STATE_UNCERTAIN,
            }[result.state]
            if result.state is ExecutionState.EXECUTED:
                self.executed_commands.append(command.command_id)
            final = self._outcome(
                command.command_id,
                state,
                self.clock.now(),
                sequence=command.sequence,
                reason=result.reason.to_proto()
                if result.reason and state == S.PUMP_COMMAND_STATE_REJECTED
                else 0,
                detail=result.detail,
                delivered_u=result.delivered_u,
                reference=result.reference,
            )
            self.outbox.enqueue(RecordKind.COMMAND_OUTCOME, final.SerializeToString())
            self.link.wake()


def state_dir(root: Path, hub: str) -> Path:
    return root / hub
