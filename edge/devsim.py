"""Simulated pump and CGM as a device process of their own, served on a Unix socket.

    python -m edge.devsim --socket PATH [--hub N] [--name-prefix P] [--ack-loss X]

The hub (`langerhans edge --devices PATH`) reaches them through `edge.drivers.remote`, as a
real hub reaches its pump and sensor over the radio: the person's physiology, the pump's and
the sensor's simulation live here, not in the hub. The person is the fleet's person `N` (same
index → same person) on the clock the settings describe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from edge.drivers.base import BolusShape, DeliveryUnconfirmedError, PumpRefusedError
from edge.drivers.remote import encode_value
from edge.drivers.simulated import SimCgm, SimPump
from edge.fleet import fleet_person
from edge.settings import EdgeSettings
from services.runtime.logging import configure_logging
from sim.drivers import SimulatedPerson

__all__ = ["DeviceServer", "main"]

log = logging.getLogger(__name__)


class DeviceServer:
    """Answers `edge.drivers.remote` requests with one simulated pump and sensor."""

    def __init__(self, info: dict[str, str], pump: SimPump, cgm: SimCgm) -> None:
        self.info = info
        self.pump = pump
        self.cgm = cgm
        self._ops: dict[str, Callable[..., Awaitable[Any]]] = {
            "status": pump.status,
            "history_since": pump.history_since,
            "set_temp_basal": pump.set_temp_basal,
            "cancel_temp_basal": pump.cancel_temp_basal,
            "bolus": lambda **shape: pump.bolus(BolusShape(**shape)),
            "suspend": pump.suspend,
            "resume": pump.resume,
            "readings_since": cgm.readings_since,
        }

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"id": request.get("id")}
        op = request.get("op")
        try:
            if op == "info":
                reply["ok"] = self.info
            elif op in self._ops:
                reply["ok"] = encode_value(await self._ops[op](**request.get("args", {})))
            else:
                reply.update(error="bad_request", message=f"unknown op {op!r}")
        except PumpRefusedError as exc:
            reply.update(error="refused", message=str(exc))
        except DeliveryUnconfirmedError as exc:
            reply.update(error="unconfirmed", message=str(exc))
        except ConnectionError as exc:  # the simulated radio link is down
            reply.update(error="link_down", message=str(exc))
        return reply

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                reply = await self.answer(json.loads(line))
                if reply.get("error") == "unconfirmed":
                    continue  # the injected fault: the pump acted, its answer is lost
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            log.info("hub link ended: %s", exc)
        finally:
            writer.close()


def build(settings: EdgeSettings, index: int, name_prefix: str, ack_loss: float) -> DeviceServer:
    name = f"{name_prefix}-{index:04d}"
    person = fleet_person(index, name_prefix)
    sim_person = SimulatedPerson(person, settings.clock(), seed=index)
    pump = SimPump(sim_person, serial=f"{name}-pump", ack_loss_rate=ack_loss, seed=index)
    cgm = SimCgm(sim_person, sensor_id=f"{name}-cgm")
    info = {
        "hub_name": name,
        "patient_id": person.person_id,
        "age_group": person.age_group,
        "pump_serial": pump.serial,
        "pump_model": pump.model,
        "cgm_model": cgm.model,
        "sensor_id": cgm.sensor_id,
    }
    return DeviceServer(info, pump, cgm)


async def _serve(server: DeviceServer, socket_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # noqa: ASYNC240 - once, before serving
    listener = await asyncio.start_unix_server(server.serve_client, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    log.info("simulated devices up", extra={"socket": str(socket_path), **server.info})
    async with listener:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.devsim", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--hub", type=int, default=0)
    parser.add_argument("--name-prefix", default="sim-hub")
    parser.add_argument("--ack-loss", type=float, default=0.0)
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = EdgeSettings(service_name="edge-devsim")
    configure_logging(settings)
    server = build(settings, args.hub, args.name_prefix, args.ack_loss)
    asyncio.run(_serve(server, args.socket))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
