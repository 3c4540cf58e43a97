"""What the device gateway decides: enrolment, hub streams, commands, loop status.

All storage work runs on one worker thread (`_db`), one transaction per request or per hub
message, so the event loop never blocks on SQLite/PostgreSQL; with SQLite that thread and the
outbox relay take turns through one process lock (`runtime.writer_lock.serialize_writers`).
Hub identity comes only from the TLS-verified client certificate (`DeviceIdentity`); every
message a hub sends must name that device and patient, or the stream is closed and the attempt
logged.

Command routing: every replica consumes pump.commands.v1 with a consumer group of its own, so
every replica sees every command; the replica holding the device's stream claims it with an
atomic QUEUED → SENT update in the shared table (recording itself in delivered_by_replica) and
writes it to the stream. Commands that arrive while the hub is offline stay QUEUED until it
reconnects (to any replica) or they expire; an expired command is never sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2
from sqlalchemy.orm import Session, sessionmaker

from services.device_gateway import events, repository
from services.device_gateway.pki import CsrRejectedError, DeviceCa, DeviceIdentity
from services.runtime import outbox
from services.runtime.clock import Clock
from services.runtime.command_signing import SignatureRejectedError, TrustedKeys
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)

__all__ = ["DeviceGateway", "HubStream", "IdentityMismatchError"]

log = logging.getLogger(__name__)
T = TypeVar("T")

S = device_pb2.PumpCommandState
R = device_pb2.PumpCommandRejectionReason
ACTIVE = gw_pb2.DeviceState.DEVICE_STATE_ACTIVE
REVOKED = gw_pb2.DeviceState.DEVICE_STATE_REVOKED
TERMINAL = frozenset(
    {S.PUMP_COMMAND_STATE_EXECUTED, S.PUMP_COMMAND_STATE_REJECTED, S.PUMP_COMMAND_STATE_EXPIRED}
)
# Hub-reported transitions the gateway accepts, by current state. UNCERTAIN can still be
# resolved by reconciliation with pump history (→ EXECUTED or REJECTED).
_ALLOWED_FROM: dict[int, frozenset[int]] = {
    S.PUMP_COMMAND_STATE_RECEIVED: frozenset(
        {S.PUMP_COMMAND_STATE_QUEUED, S.PUMP_COMMAND_STATE_SENT}
    ),
    S.PUMP_COMMAND_STATE_EXECUTED: frozenset(
        {
            S.PUMP_COMMAND_STATE_QUEUED,
            S.PUMP_COMMAND_STATE_SENT,
            S.PUMP_COMMAND_STATE_RECEIVED,
            S.PUMP_COMMAND_STATE_UNCERTAIN,
        }
    ),
    S.PUMP_COMMAND_STATE_REJECTED: frozenset(
        {
            S.PUMP_COMMAND_STATE_QUEUED,
            S.PUMP_COMMAND_STATE_SENT,
            S.PUMP_COMMAND_STATE_RECEIVED,
            S.PUMP_COMMAND_STATE_UNCERTAIN,
        }
    ),
    # a hub reports EXPIRED only for a command it never handed to the pump
    S.PUMP_COMMAND_STATE_EXPIRED: frozenset(
        {
            S.PUMP_COMMAND_STATE_QUEUED,
            S.PUMP_COMMAND_STATE_SENT,
            S.PUMP_COMMAND_STATE_RECEIVED,
            S.PUMP_COMMAND_STATE_UNCERTAIN,
        }
    ),
    S.PUMP_COMMAND_STATE_UNCERTAIN: frozenset(
        {S.PUMP_COMMAND_STATE_SENT, S.PUMP_COMMAND_STATE_RECEIVED}
    ),
}


class IdentityMismatchError(PermissionDenied):
    """A hub tried to speak for another device or person."""


def ts(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def from_ts(value: Timestamp) -> dt.datetime:
    return value.ToDatetime(tzinfo=dt.UTC)


@dataclass(eq=False)
class HubStream:
    """One live Connect stream held by this replica."""

    identity: DeviceIdentity
    session_id: str
    last_command_sequence: int
    outgoing: asyncio.Queue[gw_pb2.ConnectResponse | None] = field(default_factory=asyncio.Queue)
    cloud_sequence: int = 0
    # command ids written to this stream (a SENT command is re-offered once per stream)
    offered: set[str] = field(default_factory=set)
    closed_reason: str | None = None
    failure: ServiceError | None = None

    def send(self, response: gw_pb2.ConnectResponse, now: dt.datetime) -> None:
        self.cloud_sequence += 1
        response.cloud_sequence = self.cloud_sequence
        response.sent_at.CopyFrom(ts(now))
        self.outgoing.put_nowait(response)

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self.outgoing.put_nowait(None)


class DeviceGateway:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        clock: Clock,
        ca: DeviceCa,
        command_keys: TrustedKeys,
        command_key_bytes: dict[str, bytes],
        replica_id: str,
        token_ttl: dt.timedelta,
        certificate_validity: dt.timedelta,
        hub_offline_after_s: float,
        peripheral_silent_after_s: float,
        on_outbox_write: Callable[[], None] = lambda: None,
        in_flight_grace_s: float = 120.0,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._ca = ca
        self._keys = command_keys
        self._key_bytes = command_key_bytes
        self.replica_id = replica_id
        self._token_ttl = token_ttl
        self._validity = certificate_validity
        self._offline_after = dt.timedelta(seconds=hub_offline_after_s)
        self._silent_after = dt.timedelta(seconds=peripheral_silent_after_s)
        self._wake_relay = on_outbox_write
        self._in_flight_grace = dt.timedelta(seconds=in_flight_grace_s)
        # a hub forgets seen command ids after 7 days; ask only about younger commands
        self._settle_window = dt.timedelta(days=6)
        self._db_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")
        self.streams: dict[str, HubStream] = {}
        self._delivery_locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ plumbing
    async def _db(self, work: Callable[[Session], T], *, writes_outbox: bool = False) -> T:
        def run() -> T:
            with self._sessions() as session, session.begin():
                return work(session)

        result = await asyncio.get_running_loop().run_in_executor(self._db_pool, run)
        if writes_outbox:
            self._wake_relay()
        return result

    def bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        self._db_pool.shutdown(wait=True)

    def now(self) -> dt.datetime:
        return self._clock.now()

    # ------------------------------------------------------------------ enrolment
    async def create_enrollment_token(
        self, patient_id: str, requested_by: str
    ) -> tuple[str, dt.datetime]:
        if not patient_id:
            raise InvalidArgument("patient_id is required")
        token = secrets.token_urlsafe(32)
        now = self.now()
        expires_at = now + self._token_ttl

        def work(session: Session) -> None:
            repository.add_token(
                session,
                token,
                patient_id=patient_id,
                requested_by=requested_by or "unknown",
                now=now,
                expires_at=expires_at,
            )

        await self._db(work)
        log.info(
            "enrolment token created",
            extra={"patient_id": patient_id, "requested_by": requested_by},
        )
        return token, expires_at

    async def enroll(self, request: gw_pb2.EnrollRequest) -> gw_pb2.EnrollResponse:
        if not request.enrollment_token or not request.csr_pem or not request.hub_serial:
            raise InvalidArgument("enrollment_token, csr_pem and hub_serial are required")
        now = self.now()
        # The token is consumed in its own transaction, so it is spent even if the CSR fails.
        patient_id = await self._db(
            lambda s: repository.consume_token(s, request.enrollment_token, now)
        )
        if patient_id is None:
            log.warning(
                "enrolment with an unknown, used or expired token",
                extra={"hub_serial": request.hub_serial},
            )
            raise Unauthenticated("the enrolment token is unknown, used or expired")
        device_id = "hub-" + uuid.uuid4().hex
        try:
            cert = self._ca.sign_hub_csr(
                request.csr_pem,
                hub_serial=request.hub_serial,
                device_id=device_id,
                patient_id=patient_id,
                # TLS checks certificates against the real clock, never the simulated one
                now=dt.datetime.now(dt.UTC),
                validity=self._validity,
            )
        except CsrRejectedError as exc:
            raise InvalidArgument(str(exc)) from exc

        def work(session: Session) -> None:
            repository.add_device(
                session,
                device_id=device_id,
                patient_id=patient_id,
                hub_serial=request.hub_serial,
                software_version=request.software_version,
                state=ACTIVE,
                cert_serial=format(cert.serial_number, "x"),
                cert_not_after=cert.not_valid_after_utc,
                now=now,
            )

        await self._db(work)
        from cryptography.hazmat.primitives.serialization import Encoding

        log.info("hub enrolled", extra={"device_id": device_id, "patient_id": patient_id})
        return gw_pb2.EnrollResponse(
            device_id=device_id,
            patient_id=patient_id,
            certificate_chain_pem=cert.public_bytes(Encoding.PEM).decode(),
            ca_certificate_pem=self._ca.certificate_pem.decode(),
            certificate_expires_at=ts(cert.not_valid_after_utc),
            command_keys=[
                gw_pb2.CommandVerificationKey(key_id=k, ed25519_public_key=v)
                for k, v in self._key_bytes.items()
            ],
        )

    # ------------------------------------------------------------------ streams
    @staticmethod
    def _check_identity(session: Session, identity: DeviceIdentity) -> repository.DeviceRow:
        """The enrolled device for a verified certificate; refuses revoked or unknown ones."""
        device = repository.get_device(session, identity.device_id)
        revoked = repository.is_revoked(session, identity.serial_hex)
        if revoked or device is None or device.state != ACTIVE:
            log.warning(
                "refused hub certificate (revoked or unknown)",
                extra={"device_id": identity.device_id},
            )
            raise PermissionDenied("this certificate is revoked or not enrolled")
        if device.cert_serial != identity.serial_hex or device.patient_id != identity.patient_id:
            log.warning(
                "refused superseded hub certificate", extra={"device_id": identity.device_id}
            )
            raise PermissionDenied("this certificate is not the device's current one")
        return device

    async def open_stream(
        self, identity: DeviceIdentity, first: gw_pb2.ConnectRequest
    ) -> HubStream:
        if first.WhichOneof("payload") != "hello":
            raise FailedPrecondition("the first message on a stream must be a hello")
        hello = first.hello
        if hello.device_id != identity.device_id:
            log.warning(
                "hub hello names another device",
                extra={"device_id": identity.device_id, "claimed_device_id": hello.device_id},
            )
            raise IdentityMismatchError("a hub may only speak for itself")
        now = self.now()

        def work(session: Session) -> int:
            # one transaction per connect for the identity check and the connection record
            self._check_identity(session, identity)
            repository.update_device(
                session,
                identity.device_id,
                software_version=hello.software_version,
                pump_model=hello.pump_model,
                pump_serial=hello.pump_serial,
                cgm_model=hello.cgm_model,
                sensor_id=hello.sensor_id,
                connected_replica=self.replica_id,
                connected_at=now,
                last_seen_at=now,
            )
            device = repository.get_device(session, identity.device_id)
            assert device is not None
            return device.acked_hub_sequence

        acked = await self._db(work)
        stream = HubStream(identity, uuid.uuid4().hex, int(hello.last_command_sequence))
        previous = self.streams.get(identity.device_id)
        if previous is not None:
            previous.close("replaced by a new stream")
        self.streams[identity.device_id] = stream
        stream.send(
            gw_pb2.ConnectResponse(
                welcome=gw_pb2.CloudWelcome(
                    session_id=stream.session_id,
                    acked_hub_sequence=acked,
                    patient_id=identity.patient_id,
                )
            ),
            now,
        )
        log.info(
            "hub connected", extra={"device_id": identity.device_id, "acked_hub_sequence": acked}
        )
        await self._offer_on_connect(stream)
        return stream

    async def close_stream(self, stream: HubStream) -> None:
        device_id = stream.identity.device_id
        if self.streams.get(device_id) is stream:
            del self.streams[device_id]

            def work(session: Session) -> None:
                device = repository.get_device(session, device_id)
                if device is not None and device.connected_replica == self.replica_id:
                    repository.update_device(session, device_id, connected_replica=None)

            await self._db(work)
        log.info("hub disconnected", extra={"device_id": device_id, "reason": stream.closed_reason})

    def _own(self, identity: DeviceIdentity, device_id: str, patient_id: str, what: str) -> None:
        if (device_id and device_id != identity.device_id) or (
            patient_id and patient_id != identity.patient_id
        ):
            log.warning(
                "hub message names another device or person; stream closed",
                extra={
                    "device_id": identity.device_id,
                    "claimed_device_id": device_id,
                    "claimed_patient_id": patient_id,
                    "hub_message": what,
                },
            )
            raise IdentityMismatchError("a hub may only speak for itself")

    async def handle(self, stream: HubStream, request: gw_pb2.ConnectRequest) -> None:
        """Store one hub message (deduped on hub_sequence) and acknowledge it cumulatively."""
        identity = stream.identity
        kind = request.WhichOneof("payload")
        now = self.now()
        if kind == "hello" or kind is None:
            raise FailedPrecondition("hello only as the first message")
        if kind == "telemetry":
            t = request.telemetry
            self._own(identity, t.device_id, t.patient_id, "telemetry")
            if t.WhichOneof("payload") == "pump_history_event":
                e = t.pump_history_event
                self._own(identity, e.device_id, e.patient_id, "pump event")
        elif kind == "command_outcome":
            o = request.command_outcome
            self._own(identity, o.device_id, o.patient_id, "command outcome")
        if request.hub_sequence == 0:
            raise InvalidArgument("hub_sequence must be ≥ 1 after the hello")
        item = device_pb2.DeviceTelemetry(
            patient_id=identity.patient_id,
            device_id=identity.device_id,
            hub_sequence=request.hub_sequence,
            recorded_at=request.sent_at,
            received_at=ts(now),
        )
        if kind == "telemetry":
            payload = request.telemetry.WhichOneof("payload")
            if payload is None:
                raise InvalidArgument("telemetry without a payload")
            getattr(item, payload).CopyFrom(getattr(request.telemetry, payload))
            if request.telemetry.HasField("recorded_at"):
                item.recorded_at.CopyFrom(request.telemetry.recorded_at)
        elif kind == "command_outcome":
            item.command_outcome.CopyFrom(request.command_outcome)
            item.command_outcome.device_id = identity.device_id
            item.command_outcome.patient_id = identity.patient_id
        else:
            item.heartbeat.CopyFrom(request.heartbeat)

        def work(session: Session) -> int:
            if not repository.advance_acked(session, identity.device_id, request.hub_sequence, now):
                device = repository.get_device(session, identity.device_id)
                return device.acked_hub_sequence if device else 0  # a resend: ack again
            payload = item.WhichOneof("payload")
            if payload == "command_outcome":
                self._record_outcome(session, identity, item.command_outcome, now)
            elif payload == "heartbeat":
                repository.update_device(
                    session, identity.device_id, last_heartbeat=item.heartbeat.SerializeToString()
                )
            elif payload == "pump_status":
                repository.update_device(
                    session,
                    identity.device_id,
                    last_pump_status=item.pump_status.SerializeToString(),
                )
            events.publish_telemetry(session, item, self._clock)
            return request.hub_sequence

        acked = await self._db(work, writes_outbox=True)
        stream.send(
            gw_pb2.ConnectResponse(telemetry_ack=gw_pb2.TelemetryAck(hub_sequence=acked)),
            self.now(),
        )
        if kind == "heartbeat":
            stream.send(
                gw_pb2.ConnectResponse(
                    time_sync=gw_pb2.TimeSync(
                        server_time=ts(self.now()), hub_sent_at=request.sent_at
                    )
                ),
                self.now(),
            )
            stream.last_command_sequence = max(
                stream.last_command_sequence, request.heartbeat.last_command_sequence
            )

    def _record_outcome(
        self,
        session: Session,
        identity: DeviceIdentity,
        outcome: device_pb2.PumpCommandOutcome,
        now: dt.datetime,
    ) -> None:
        command = repository.get_command(session, outcome.command_id)
        if command is None:
            # A command the gateway never saw (e.g. sent through another path): keep the fact.
            log.warning("outcome for an unknown command", extra={"command_id": outcome.command_id})
            events.publish_outcome(session, outcome, self._clock)
            return
        if command.device_id != identity.device_id:
            raise IdentityMismatchError("a hub may only report its own commands")
        allowed = _ALLOWED_FROM.get(outcome.state)
        if allowed is None:
            raise InvalidArgument("a hub may report only RECEIVED or a final state")
        if outcome.rejection_reason == R.PUMP_COMMAND_REJECTION_REASON_DUPLICATE:
            # The hub refused a second copy (a re-offer after a reconnect, or a replay). It says
            # nothing about the command itself: the first copy's outcome is the one that counts.
            repository.add_transition(
                session,
                outcome.command_id,
                command.state,
                now,
                reason=outcome.rejection_reason,
                detail="hub refused a second copy (duplicate); state unchanged",
            )
            return
        moved = repository.set_command_state(
            session,
            outcome.command_id,
            outcome.state,
            now,
            only_from=allowed,
            delivered_insulin_u=outcome.delivered_insulin_u,
        )
        if not moved:
            log.info(
                "ignored out-of-order outcome",
                extra={
                    "command_id": outcome.command_id,
                    "state": outcome.state,
                    "current": command.state,
                },
            )
            return
        repository.add_transition(
            session,
            outcome.command_id,
            outcome.state,
            now,
            reason=outcome.rejection_reason,
            detail=outcome.detail,
        )
        full = device_pb2.PumpCommandOutcome()
        full.CopyFrom(outcome)
        full.sequence = command.sequence
        events.publish_outcome(session, full, self._clock)

    def heartbeat(self, stream: HubStream) -> None:
        """Periodic cloud heartbeat (revocation is re-checked for all streams at once by
        `close_revoked`, so thousands of streams do not each query the database)."""
        stream.send(
            gw_pb2.ConnectResponse(heartbeat=gw_pb2.CloudHeartbeat(server_time=ts(self.now()))),
            self.now(),
        )

    async def close_revoked(self) -> int:
        """Close the streams whose certificate was revoked (possibly on another replica)."""
        held = {s.identity.serial_hex: s for s in self.streams.values()}
        if not held:
            return 0
        revoked = await self._db(lambda s: repository.revoked_among(s, list(held)))
        for serial in revoked:
            stream = held[serial]
            log.warning(
                "closing the stream of a revoked certificate",
                extra={"device_id": stream.identity.device_id},
            )
            stream.close("certificate revoked")
        return len(revoked)

    # ------------------------------------------------------------------ commands
    def _parse(self, signed: device_pb2.SignedPumpCommand) -> device_pb2.PumpCommand:
        try:
            command = self._keys.verify(signed)
        except SignatureRejectedError as exc:
            raise InvalidArgument(f"the command is not validly signed: {exc.detail}") from exc
        if not command.command_id or not command.device_id or not command.HasField("expires_at"):
            raise InvalidArgument("the command needs command_id, device_id and expires_at")
        return command

    def _store_command(
        self,
        session: Session,
        signed: device_pb2.SignedPumpCommand,
        command: device_pb2.PumpCommand,
        now: dt.datetime,
        *,
        fan_out: bool,
    ) -> tuple[int, bool]:
        existing = repository.get_command(session, command.command_id)
        if existing is not None:
            return existing.state, True
        device = repository.get_device(session, command.device_id)
        if device is None or device.patient_id != command.patient_id:
            raise NotFound("no enrolled device with this id for this person")
        expires_at = from_ts(command.expires_at)
        state = S.PUMP_COMMAND_STATE_QUEUED if expires_at > now else S.PUMP_COMMAND_STATE_EXPIRED
        repository.add_command(
            session,
            command_id=command.command_id,
            device_id=command.device_id,
            patient_id=command.patient_id,
            sequence=command.sequence,
            state=state,
            expires_at=expires_at,
            signed_command=signed.SerializeToString(),
            now=now,
        )
        reason = (
            R.PUMP_COMMAND_REJECTION_REASON_EXPIRED if state == S.PUMP_COMMAND_STATE_EXPIRED else 0
        )
        repository.add_transition(session, command.command_id, state, now, reason=reason)
        events.publish_outcome(session, self._outcome(command, state, now, reason), self._clock)
        if fan_out and state == S.PUMP_COMMAND_STATE_QUEUED:
            events.publish_command(
                session, command.patient_id, command.command_id, signed, self._clock
            )
        return state, False

    def _outcome(
        self,
        command: device_pb2.PumpCommand | repository.CommandRow,
        state: int,
        now: dt.datetime,
        reason: int = 0,
        detail: str = "",
    ) -> device_pb2.PumpCommandOutcome:
        return device_pb2.PumpCommandOutcome(
            command_id=command.command_id,
            patient_id=command.patient_id,
            device_id=command.device_id,
            sequence=command.sequence,
            state=state,  # type: ignore[arg-type]
            rejection_reason=reason,  # type: ignore[arg-type]
            detail=detail,
            occurred_at=ts(now),
        )

    async def send_command(
        self, signed: device_pb2.SignedPumpCommand
    ) -> gw_pb2.SendCommandResponse:
        """Store a command (QUEUED) and publish it; if this replica holds the device's stream,
        claim it (→ SENT) in the same transaction and write it to the stream.

        Both transitions are recorded and both outcomes go through the outbox, in one commit
        instead of two: the command path waits for one durable write, not two.
        """
        command = self._parse(signed)
        now = self.now()
        if command.device_id not in self.streams:
            state, duplicate = await self._db(
                lambda s: self._store_command(s, signed, command, now, fan_out=True),
                writes_outbox=True,
            )
            return gw_pb2.SendCommandResponse(
                command_id=command.command_id,
                state=state,  # type: ignore[arg-type]
                duplicate=duplicate,
            )
        lock = self._delivery_locks.setdefault(command.device_id, asyncio.Lock())
        async with lock:
            stream = self.streams.get(command.device_id)
            after = stream.last_command_sequence if stream else 0
            offered = set(stream.offered) if stream else set()

            def work(session: Session) -> tuple[int, bool, list[tuple[str, bytes]]]:
                state, duplicate = self._store_command(session, signed, command, now, fan_out=True)
                if duplicate or state != S.PUMP_COMMAND_STATE_QUEUED or stream is None:
                    return state, duplicate, []
                claimed = self._claim(session, command.device_id, now, after, offered)
                if any(command_id == command.command_id for command_id, _ in claimed):
                    state = S.PUMP_COMMAND_STATE_SENT
                # else: not above the hub's last accepted sequence, so it stays QUEUED (the
                # hub would refuse it) until it expires
                return state, duplicate, claimed

            state, duplicate, claimed = await self._db(work, writes_outbox=True)
            if stream is not None:
                self._write_claimed(stream, claimed)
        return gw_pb2.SendCommandResponse(
            command_id=command.command_id,
            state=state,  # type: ignore[arg-type]
            duplicate=duplicate,
        )

    async def command_from_bus(self, signed: device_pb2.SignedPumpCommand) -> None:
        """A command seen on pump.commands.v1 (from the dosing engine or another replica)."""
        try:
            command = self._parse(signed)
        except InvalidArgument as exc:
            log.warning("ignoring pump command from the bus: %s", exc.message)
            return
        stream = self.streams.get(command.device_id)
        if stream is not None and command.command_id in stream.offered:
            # this replica's own SendCommand, already stored and written to the stream: its echo
            # on the bus needs no database work (two fewer transactions per command)
            return
        now = self.now()
        try:
            await self._db(
                lambda s: self._store_command(s, signed, command, now, fan_out=False),
                writes_outbox=True,
            )
        except NotFound:
            log.warning(
                "pump command for an unknown device", extra={"device_id": command.device_id}
            )
            return
        if command.device_id in self.streams:
            await self.deliver(command.device_id)

    def command_from_bus_threadsafe(self, signed: device_pb2.SignedPumpCommand) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.command_from_bus(signed), self._loop).result(
            timeout=60
        )

    async def deliver(self, device_id: str) -> set[str]:
        """Send this device's unexpired commands that the hub has not seen on this stream.

        QUEUED commands are claimed with an atomic QUEUED → SENT update (across replicas).
        SENT commands are re-offered once per stream: the replica that marked one SENT may have
        crashed, or the stream may have died, before the hub got it. Re-offering is safe — the
        hub never runs a command id it has seen (it answers with that command's state) nor any
        sequence not above the last it accepted — and a command the hub already accepted is
        skipped here anyway, since its sequence is not above the hub's `last_command_sequence`.
        Returns the ids written to the stream.
        """
        lock = self._delivery_locks.setdefault(device_id, asyncio.Lock())
        async with lock:
            stream = self.streams.get(device_id)
            if stream is None:
                return set()
            now = self.now()
            after = stream.last_command_sequence
            offered = set(stream.offered)

            claimed = await self._db(
                lambda s: self._claim(s, device_id, now, after, offered), writes_outbox=True
            )
            return self._write_claimed(stream, claimed)

    def _write_claimed(self, stream: HubStream, claimed: list[tuple[str, bytes]]) -> set[str]:
        """Write committed claims to the stream (only after the SENT transition is durable)."""
        sent: set[str] = set()
        for command_id, raw in claimed:
            signed = device_pb2.SignedPumpCommand()
            signed.ParseFromString(raw)
            stream.offered.add(command_id)
            stream.send(gw_pb2.ConnectResponse(signed_command=signed), self.now())
            sent.add(command_id)
        return sent

    def _claim(
        self,
        session: Session,
        device_id: str,
        now: dt.datetime,
        after: int,
        offered: set[str],
    ) -> list[tuple[str, bytes]]:
        """Move this device's offerable commands to SENT for this replica; returns them."""
        claimed: list[tuple[str, bytes]] = []
        for row in repository.offerable_for(session, device_id, now):
            if row.sequence <= after or row.command_id in offered:
                continue  # the hub already accepted this or a later sequence
            reoffer = row.state == S.PUMP_COMMAND_STATE_SENT
            if not repository.set_command_state(
                session,
                row.command_id,
                S.PUMP_COMMAND_STATE_SENT,
                now,
                only_from=[row.state],
                delivered_by_replica=self.replica_id,
            ):
                continue  # another replica claimed it or an outcome moved it on
            detail = (
                f"re-offered by {self.replica_id} (was sent by "
                f"{row.delivered_by_replica or 'unknown'})"
                if reoffer
                else self.replica_id
            )
            repository.add_transition(
                session, row.command_id, S.PUMP_COMMAND_STATE_SENT, now, detail=detail
            )
            if not reoffer:
                events.publish_outcome(
                    session, self._outcome(row, S.PUMP_COMMAND_STATE_SENT, now), self._clock
                )
            else:
                log.info(
                    "re-offering a command left at SENT",
                    extra={"command_id": row.command_id, "device_id": device_id},
                )
            claimed.append((row.command_id, row.signed_command))
        return claimed

    async def _offer_on_connect(self, stream: HubStream) -> None:
        """A new stream's first commands, in one transaction: what `deliver` sends (QUEUED,
        and SENT not yet offered on this stream), then what the hub is asked to settle."""
        device_id = stream.identity.device_id
        lock = self._delivery_locks.setdefault(device_id, asyncio.Lock())
        async with lock:
            if self.streams.get(device_id) is not stream:
                return  # already replaced by a newer stream, which offers for itself
            now = self.now()
            after = stream.last_command_sequence
            offered = set(stream.offered)

            def work(session: Session) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
                claimed = self._claim(session, device_id, now, after, offered)
                skip = offered | {command_id for command_id, _ in claimed}
                return claimed, self._settle_offers(session, device_id, now, skip)

            claimed, asked = await self._db(work, writes_outbox=True)
            self._write_claimed(stream, claimed + asked)
        if asked:
            log.info(
                "asked a reconnected hub to settle its outstanding commands",
                extra={"device_id": device_id, "commands": len(asked)},
            )

    def _settle_offers(
        self, session: Session, device_id: str, now: dt.datetime, skip: set[str]
    ) -> list[tuple[str, bytes]]:
        """Offer the hub, once per stream, every command of its device still without a final
        outcome (SENT, RECEIVED or UNCERTAIN — expired or not) that `deliver` did not send.

        These are commands whose stream died, or whose hub died mid-command. The hub answers
        each from its own records and never runs one twice: a copy of a command it has seen
        (DUPLICATE to its verifier) is answered with that command's settled state — executed,
        not executed, or uncertain until its pump history reconciles it — and a command it never
        saw is refused by its own checks (EXPIRED, or STALE_SEQUENCE below a later accepted one)
        and therefore provably never ran. Only commands the hub still remembers are asked
        about (it keeps seen ids 7 days; `settle_window`), so "never seen" means never received.
        The state is left as it is until the hub's answer arrives.
        """
        asked: list[tuple[str, bytes]] = []
        for row in repository.outstanding_for(session, device_id, now - self._settle_window):
            if row.command_id in skip:
                continue
            repository.add_transition(
                session,
                row.command_id,
                row.state,
                now,
                detail=f"offered again by {self.replica_id} so the reconnected hub settles it",
            )
            asked.append((row.command_id, row.signed_command))
        return asked

    async def expire_queued(self) -> int:
        now = self.now()

        def work(session: Session) -> int:
            count = 0
            for row in repository.expired_queued(session, now):
                if repository.set_command_state(
                    session,
                    row.command_id,
                    S.PUMP_COMMAND_STATE_EXPIRED,
                    now,
                    only_from=[S.PUMP_COMMAND_STATE_QUEUED],
                ):
                    reason = R.PUMP_COMMAND_REJECTION_REASON_EXPIRED
                    repository.add_transition(
                        session,
                        row.command_id,
                        S.PUMP_COMMAND_STATE_EXPIRED,
                        now,
                        reason=reason,
                        detail="expired while queued",
                    )
                    events.publish_outcome(
                        session,
                        self._outcome(
                            row, S.PUMP_COMMAND_STATE_EXPIRED, now, reason, "expired while queued"
                        ),
                        self._clock,
                    )
                    count += 1
            return count

        return await self._db(work, writes_outbox=True)

    async def deliver_pending(self) -> int:
        """Safety net for routing: deliver QUEUED commands of the streams this replica holds.

        pump.commands.v1 is the fast path; a replica whose consumer was not yet assigned (it
        starts at the end of the topic) or missed a record still finds the command here.
        """
        held = list(self.streams)
        if not held:
            return 0
        now = self.now()
        pending = await self._db(lambda s: repository.devices_with_queued(s, held, now))
        for device_id in pending:
            await self.deliver(device_id)
        return len(pending)

    async def mark_overdue_uncertain(self) -> int:
        """SENT or RECEIVED commands with no final outcome `in_flight_grace` after they expired
        become UNCERTAIN: the gateway cannot know whether the pump executed them. A later hub
        outcome (from its durable outbox) still settles them as EXECUTED, REJECTED or EXPIRED.
        """
        now = self.now()
        cutoff = now - self._in_flight_grace

        def work(session: Session) -> int:
            count = 0
            for row in repository.overdue_in_flight(session, cutoff):
                if repository.set_command_state(
                    session,
                    row.command_id,
                    S.PUMP_COMMAND_STATE_UNCERTAIN,
                    now,
                    only_from=[row.state],
                ):
                    detail = "no outcome from the hub after expiry"
                    repository.add_transition(
                        session, row.command_id, S.PUMP_COMMAND_STATE_UNCERTAIN, now, detail=detail
                    )
                    events.publish_outcome(
                        session,
                        self._outcome(row, S.PUMP_COMMAND_STATE_UNCERTAIN, now, detail=detail),
                        self._clock,
                    )
                    count += 1
            return count

        return await self._db(work, writes_outbox=True)

    async def command_status(self, command_id: str) -> gw_pb2.PumpCommandStatus:
        def work(session: Session) -> tuple[repository.CommandRow | None, list[dict[str, object]]]:
            return repository.get_command(session, command_id), repository.transitions_of(
                session, command_id
            )

        row, transitions = await self._db(work)
        if row is None:
            raise NotFound("no such command")
        signed = device_pb2.SignedPumpCommand()
        try:
            signed.ParseFromString(row.signed_command)
        except DecodeError:
            signed = device_pb2.SignedPumpCommand()
        status = gw_pb2.PumpCommandStatus(
            command_id=row.command_id,
            patient_id=row.patient_id,
            device_id=row.device_id,
            sequence=row.sequence,
            state=row.state,  # type: ignore[arg-type]
            delivered_insulin_u=row.delivered_insulin_u,
            signed_command=signed,
        )
        for t in transitions:
            occurred = repository.aware(t["occurred_at"])  # type: ignore[arg-type]
            assert occurred is not None
            status.transitions.append(
                gw_pb2.PumpCommandTransition(
                    state=int(t["state"]),  # type: ignore[call-overload]
                    occurred_at=ts(occurred),
                    rejection_reason=int(t["rejection_reason"]),  # type: ignore[call-overload]
                    detail=str(t["detail"]),
                )
            )
        return status

    # ------------------------------------------------------------------ devices and status
    def _device_message(self, row: repository.DeviceRow) -> gw_pb2.Device:
        device = gw_pb2.Device(
            device_id=row.device_id,
            patient_id=row.patient_id,
            hub_serial=row.hub_serial,
            software_version=row.software_version,
            state=row.state,  # type: ignore[arg-type]
            enrolled_at=ts(row.enrolled_at),
            pump_model=row.pump_model,
            pump_serial=row.pump_serial,
            cgm_model=row.cgm_model,
            sensor_id=row.sensor_id,
        )
        if row.last_seen_at is not None:
            device.last_seen_at.CopyFrom(ts(row.last_seen_at))
        return device

    async def list_devices(self, patient_id: str) -> list[gw_pb2.Device]:
        rows = await self._db(lambda s: repository.devices_of(s, patient_id))
        return [self._device_message(r) for r in rows]

    async def revoke_device(self, device_id: str, reason: str, requested_by: str) -> gw_pb2.Device:
        now = self.now()

        def work(session: Session) -> repository.DeviceRow:
            device = repository.get_device(session, device_id)
            if device is None:
                raise NotFound("no such device")
            repository.revoke(
                session,
                device,
                reason=reason or "unspecified",
                requested_by=requested_by or "unknown",
                now=now,
                state=REVOKED,
            )
            updated = repository.get_device(session, device_id)
            assert updated is not None
            return updated

        row = await self._db(work)
        stream = self.streams.get(device_id)
        if stream is not None:
            stream.close("certificate revoked")
        log.warning(
            "device revoked",
            extra={"device_id": device_id, "requested_by": requested_by, "reason": reason},
        )
        return self._device_message(row)

    async def loop_status(self, patient_id: str) -> gw_pb2.GetLoopStatusResponse:
        now = self.now()

        def work(session: Session) -> tuple[list[repository.DeviceRow], int]:
            rows = [d for d in repository.devices_of(session, patient_id) if d.state == ACTIVE]
            return rows, outbox.pending_count(session)

        rows, pending = await self._db(work)
        reason_codes = common_pb2.LoopStatusReason
        response = gw_pb2.GetLoopStatusResponse()
        if not rows:
            response.reasons.append(reason_codes.LOOP_STATUS_REASON_NO_DEVICE)
            response.summary = "No hub is enrolled"
            return response
        device = rows[0]
        response.device_id = device.device_id
        response.hub_connected = device.connected_replica is not None
        reasons: list[int] = []
        summary: list[str] = []
        if device.last_seen_at is not None:
            response.hub_last_seen_at.CopyFrom(ts(device.last_seen_at))
        silent_for = now - device.last_seen_at if device.last_seen_at else None
        if not response.hub_connected or silent_for is None or silent_for > self._offline_after:
            reasons.append(reason_codes.LOOP_STATUS_REASON_HUB_OFFLINE)
            minutes = f" for {int(silent_for.total_seconds() // 60)} min" if silent_for else ""
            summary.append(f"Hub offline{minutes}")
        if device.last_heartbeat:
            hb = device_pb2.HubHeartbeat()
            hb.ParseFromString(device.last_heartbeat)
            response.last_heartbeat.CopyFrom(hb)
            connected = device_pb2.BleLinkState.BLE_LINK_STATE_CONNECTED
            if hb.pump_link != connected or hb.cgm_link != connected:
                reasons.append(reason_codes.LOOP_STATUS_REASON_BLE_DOWN)
                summary.append("Bluetooth link down")
            if hb.HasField("pump_last_seen_at"):
                response.pump_last_seen_at.CopyFrom(hb.pump_last_seen_at)
            if (
                not hb.HasField("pump_last_seen_at")
                or now - from_ts(hb.pump_last_seen_at) > self._silent_after
            ):
                reasons.append(reason_codes.LOOP_STATUS_REASON_PUMP_SILENT)
                summary.append("Pump silent")
            if hb.HasField("cgm_last_seen_at"):
                response.cgm_last_seen_at.CopyFrom(hb.cgm_last_seen_at)
            if (
                not hb.HasField("cgm_last_seen_at")
                or now - from_ts(hb.cgm_last_seen_at) > self._silent_after
            ):
                reasons.append(reason_codes.LOOP_STATUS_REASON_CGM_SILENT)
                summary.append("CGM silent")
            if hb.uncertain_command_ids:
                reasons.append(reason_codes.LOOP_STATUS_REASON_DELIVERY_UNCERTAIN)
                summary.append("Delivery uncertain")
        if device.last_pump_status:
            ps = device_pb2.PumpStatus()
            ps.ParseFromString(device.last_pump_status)
            response.last_pump_status.CopyFrom(ps)
            if ps.suspended:
                reasons.append(reason_codes.LOOP_STATUS_REASON_PUMP_SUSPENDED)
                summary.append("Pump suspended")
        if pending > 1000:
            reasons.append(reason_codes.LOOP_STATUS_REASON_CLOUD)
            summary.append("Cloud backlog")
        if not reasons:
            reasons.append(reason_codes.LOOP_STATUS_REASON_OK)
            summary.append("Looping")
        response.reasons.extend(reasons)  # type: ignore[arg-type]
        response.summary = "; ".join(summary)
        return response
