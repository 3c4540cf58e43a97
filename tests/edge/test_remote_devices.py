"""The hub's pump and CGM in a separate device process (edge.devsim ⇄ edge.drivers.remote).

The link must carry the driver Protocol faithfully and keep the radio's failure semantics: a
command that never left the hub is a refusal; one whose answer is lost is unconfirmed (the pump
may have acted), never a success and never a refusal.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.devsim import DeviceServer
from edge.drivers.base import BolusShape, DeliveryUnconfirmedError, PumpRefusedError
from edge.drivers.remote import (
    CommandNotSentError,
    DeviceLink,
    DeviceLinkDownError,
    RemoteCgm,
    RemotePump,
)
from edge.drivers.simulated import SimCgm, SimPump
from edge.fleet import fleet_person
from services.runtime.clock import FixedClock
from sim.drivers import SimulatedPerson

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _server(clock: FixedClock, ack_loss: float = 0.0) -> DeviceServer:
    person = SimulatedPerson(fleet_person(3, "remote-test"), clock, seed=3)
    pump = SimPump(person, serial="p-1", ack_loss_rate=ack_loss, seed=3)
    cgm = SimCgm(person, sensor_id="c-1")
    return DeviceServer({"hub_name": "remote-test-0003"}, pump, cgm)


async def _serve(server: DeviceServer) -> AsyncIterator[str]:
    directory = tempfile.mkdtemp(prefix="devsim-", dir="/tmp")  # Unix socket paths are short
    path = str(Path(directory) / "d.sock")
    listener = await asyncio.start_unix_server(server.serve_client, path=path)
    try:
        yield path
    finally:
        await asyncio.sleep(0.05)  # the device side sees the hub hang up and closes its end
        listener.close()
        await listener.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


def test_pump_and_cgm_over_the_link_match_the_device() -> None:
    async def scenario() -> None:
        clock = FixedClock(START)
        server = _server(clock)
        async for path in _serve(server):
            link = DeviceLink(path)
            pump, cgm = RemotePump(link), RemoteCgm(link)
            assert (await link.call("info"))["hub_name"] == "remote-test-0003"
            clock.advance(30 * 60)
            readings = await cgm.readings_since(-1)
            local = await server.cgm.readings_since(-1)
            assert readings == local
            assert len(readings) >= 5
            assert await cgm.readings_since(readings[-1].sequence) == []

            ack = await pump.set_temp_basal(0.35, 30)
            assert ack.pump_time == clock.now()
            status = await pump.status()
            assert status == await server.pump.status()
            assert status.temp_basal_u_per_h == pytest.approx(0.35)
            history = await pump.history_since(-1)
            assert history == await server.pump.history_since(-1)
            assert history[-1].kind.value == "temp_basal_started"

            bolus_ack = await pump.bolus(BolusShape(insulin_u=0.5))
            assert bolus_ack.accepted_u == pytest.approx(0.5)
            programmed = (await pump.history_since(history[-1].sequence))[-1]
            assert (programmed.kind.value, programmed.amount_u) == ("bolus_programmed", 0.5)
            with pytest.raises(PumpRefusedError):  # the device refused: nothing delivered
                await pump.set_temp_basal(-1.0, 30)
            await link.aclose()

    asyncio.run(scenario())


def test_a_lost_answer_is_unconfirmed_and_the_pump_did_act() -> None:
    async def scenario() -> None:
        clock = FixedClock(START)
        server = _server(clock, ack_loss=1.0)
        async for path in _serve(server):
            link = DeviceLink(path, timeout_s=0.5)
            with pytest.raises(DeliveryUnconfirmedError):
                await RemotePump(link).set_temp_basal(0.4, 30)
            # the pump executed it; only the hub does not know
            assert (await server.pump.status()).temp_basal_u_per_h == pytest.approx(0.4)
            # the link recovers for the next request
            assert (await RemotePump(link).status()).temp_basal_u_per_h == pytest.approx(0.4)
            await link.aclose()

    asyncio.run(scenario())


def test_no_device_process_means_not_sent() -> None:
    async def scenario() -> None:
        link = DeviceLink("/tmp/no-such-devsim.sock", timeout_s=0.5)
        with pytest.raises(CommandNotSentError):
            await RemotePump(link).bolus(BolusShape(insulin_u=1.0))
        with pytest.raises(DeviceLinkDownError):
            await RemotePump(link).status()

    asyncio.run(scenario())


def test_the_hub_process_loads_no_simulator_and_no_pydantic() -> None:
    # what a hub imports is its resident memory: numpy and the patient model belong to the
    # device process, pydantic and X.509 are not needed once enrolled
    code = (
        "import sys, edge.main, edge.hub, edge.agent\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'numpy', 'sim', 'pydantic', 'pydantic_settings', 'sqlalchemy'})\n"
        "x509 = [m for m in sys.modules if m.startswith('cryptography.x509')]\n"
        "print(heavy, x509)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[] []"
