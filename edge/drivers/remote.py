"""Pump and CGM drivers reached over a local socket (the simulated devices in another process).

A real hub talks to its pump and sensor over Bluetooth; their physiology and firmware do not
run in the hub's process. `edge.devsim` runs the simulated person, pump and sensor as such a
separate device process and serves the driver Protocols as JSON lines on a Unix socket;
`RemotePump` / `RemoteCgm` are the hub's side. The hub then carries no simulator (numpy, the
patient model, controllers) — the same footprint as with the Bluetooth drivers.

Failure semantics match the radio's: no connection before a command is written →
`CommandNotSentError` (a refusal: nothing reached the pump); the link dropping after the command
was written, or no answer within the timeout → `DeliveryUnconfirmedError` (the pump may have
acted; the command gate records it as uncertain).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from edge.drivers.base import (
    BolusShape,
    CgmReading,
    CommandAck,
    DeliveryUnconfirmedError,
    GlucoseFlag,
    PumpEventKind,
    PumpHistoryEvent,
    PumpRefusedError,
    PumpStatusSnapshot,
)

__all__ = [
    "CommandNotSentError",
    "DeviceLink",
    "DeviceLinkDownError",
    "RemoteCgm",
    "RemotePump",
    "decode_value",
    "encode_value",
]

_TIMEOUT_S = 10.0
_LIMIT = 16 * 1024 * 1024  # one history answer can be long after an outage


class DeviceLinkDownError(ConnectionError):
    """No connection to the device process."""


class CommandNotSentError(PumpRefusedError):
    """The command never left the hub (no link): nothing was delivered."""


def encode_value(value: Any) -> Any:
    """Driver dataclasses, datetimes and enums as JSON values (tagged, so they decode back)."""
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, PumpEventKind | GlucoseFlag):
        return value.value
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: encode_value(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def _dt(value: Any) -> Any:
    if isinstance(value, dict) and "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    return value


def decode_value(kind: str, doc: Any) -> Any:
    fields = {k: _dt(v) for k, v in doc.items()} if isinstance(doc, dict) else doc
    if kind == "status":
        return PumpStatusSnapshot(**fields)
    if kind == "event":
        fields["kind"] = PumpEventKind(fields["kind"])
        return PumpHistoryEvent(**fields)
    if kind == "ack":
        return CommandAck(**fields)
    if kind == "reading":
        flag = fields.get("flag")
        fields["flag"] = GlucoseFlag(flag) if flag is not None else None
        return CgmReading(**fields)
    raise ValueError(f"unknown kind {kind!r}")


class DeviceLink:
    """One connection to the device process; requests are answered in order."""

    def __init__(self, socket_path: str, *, timeout_s: float = _TIMEOUT_S) -> None:
        self._path = socket_path
        self._timeout_s = timeout_s
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            try:
                self._streams = await asyncio.wait_for(
                    asyncio.open_unix_connection(self._path, limit=_LIMIT), self._timeout_s
                )
            except (OSError, TimeoutError) as exc:
                raise DeviceLinkDownError(f"device process unreachable: {exc}") from exc
        return self._streams

    def _drop(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            with contextlib.suppress(Exception):
                writer.close()

    async def call(self, op: str, *, command: bool = False, **args: Any) -> Any:
        async with self._lock:
            try:
                reader, writer = await self._connect()
            except DeviceLinkDownError as exc:
                if command:
                    raise CommandNotSentError(str(exc)) from exc
                raise
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps({"id": request_id, "op": op, "args": args}).encode() + b"\n"
            try:
                writer.write(line)
                await asyncio.wait_for(writer.drain(), self._timeout_s)
                raw = await asyncio.wait_for(reader.readline(), self._timeout_s)
                if not raw:
                    raise ConnectionError("device process closed the link")
                reply = json.loads(raw)
                if reply.get("id") != request_id:
                    raise ConnectionError("answer to another request")
            except (OSError, TimeoutError, ValueError) as exc:
                self._drop()
                if command:
                    raise DeliveryUnconfirmedError(f"no answer from the pump: {exc}") from exc
                raise DeviceLinkDownError(f"device link failed: {exc}") from exc
            except asyncio.CancelledError:
                self._drop()  # the next answer on this connection would belong to this call
                raise
        error = reply.get("error")
        if error == "refused":
            raise PumpRefusedError(reply.get("message", ""))
        if error == "unconfirmed":
            raise DeliveryUnconfirmedError(reply.get("message", ""))
        if error is not None:
            raise DeviceLinkDownError(f"{error}: {reply.get('message', '')}")
        return reply.get("ok")

    def close(self) -> None:
        self._drop()

    async def aclose(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(Exception):
                await streams[1].wait_closed()


class RemotePump:
    """`PumpDriver` over the device link."""

    def __init__(self, link: DeviceLink) -> None:
        self._link = link

    async def status(self) -> PumpStatusSnapshot:
        return decode_value("status", await self._link.call("status"))  # type: ignore[no-any-return]

    async def history_since(self, after_sequence: int) -> list[PumpHistoryEvent]:
        docs = await self._link.call("history_since", after_sequence=after_sequence)
        return [decode_value("event", d) for d in docs]

    async def _command(self, op: str, **args: Any) -> CommandAck:
        doc = await self._link.call(op, command=True, **args)
        return decode_value("ack", doc)  # type: ignore[no-any-return]

    async def set_temp_basal(self, rate_u_per_h: float, duration_min: int) -> CommandAck:
        return await self._command(
            "set_temp_basal", rate_u_per_h=rate_u_per_h, duration_min=duration_min
        )

    async def cancel_temp_basal(self) -> CommandAck:
        return await self._command("cancel_temp_basal")

    async def bolus(self, shape: BolusShape) -> CommandAck:
        return await self._command("bolus", **asdict(shape))

    async def suspend(self) -> CommandAck:
        return await self._command("suspend")

    async def resume(self) -> CommandAck:
        return await self._command("resume")


class RemoteCgm:
    """`CgmDriver` over the device link."""

    def __init__(self, link: DeviceLink) -> None:
        self._link = link

    async def readings_since(self, after_sequence: int) -> list[CgmReading]:
        docs = await self._link.call("readings_since", after_sequence=after_sequence)
        return [decode_value("reading", d) for d in docs]
