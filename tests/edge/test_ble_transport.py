"""The GATT transport seam: the bleak implementation without an adapter, and the simulated link."""

import asyncio
from datetime import UTC, datetime

import pytest

from edge.ble.peripheral_sim import (
    IDD_COMMAND_CP,
    SimulatedGattPeripheral,
    SimulatedPumpPeripheral,
)
from edge.ble.transport import (
    AdapterUnavailableError,
    BleakTransport,
    GattTransport,
    NotConnectedError,
    TransportError,
    notifications,
    uuid16,
)
from services.runtime.clock import FixedClock

CHAR = uuid16(0x2AA7)


def test_uuid16_expands_to_the_sig_base_uuid():
    assert uuid16(0x2AA7) == "00002aa7-0000-1000-8000-00805f9b34fb"
    with pytest.raises(ValueError, match="16-bit"):
        uuid16(0x1_0000)


async def test_bleak_transport_without_an_adapter_fails_clearly():
    transport = BleakTransport("AA:BB:CC:DD:EE:FF")
    assert isinstance(transport, GattTransport)
    assert not transport.is_connected
    assert transport.mtu == 23
    with pytest.raises(NotConnectedError):
        await transport.read(CHAR)
    # This machine has no BlueZ/D-Bus: connect must say so, not hang or leak bleak's error.
    with pytest.raises(TransportError) as info:
        await asyncio.wait_for(transport.connect(timeout_s=2.0), 20)
    assert isinstance(info.value, AdapterUnavailableError) or "connect" in str(info.value)
    with pytest.raises(ValueError, match="address"):
        BleakTransport("")


async def test_simulated_peripheral_is_a_transport_and_streams_until_the_link_drops():
    device = SimulatedGattPeripheral("dev")
    device.add_characteristic(CHAR, read=lambda: b"\x01")
    assert isinstance(device, GattTransport)
    events: list[bool] = []
    device.on_connection_change(events.append)
    with pytest.raises(NotConnectedError):
        await device.read(CHAR)
    await device.connect()
    assert await device.read(CHAR) == b"\x01"

    received: list[bytes] = []

    async def consume() -> None:
        async for value in notifications(device, CHAR):
            received.append(value)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    for i in range(3):
        assert device.notify(CHAR, bytes([i]))
    device.lose_next(CHAR)
    device.notify(CHAR, b"lost")
    await asyncio.sleep(0.01)
    device.drop_link()
    await asyncio.wait_for(task, 1)
    assert received == [b"\x00", b"\x01", b"\x02"]
    assert events == [True, False]
    assert device.lost == 1
    assert not device.notify(CHAR, b"x")  # nobody to hear it


async def test_notification_in_flight_dies_with_its_link():
    pump = SimulatedPumpPeripheral(FixedClock(datetime(2025, 1, 1, tzinfo=UTC)))
    got: list[bytes] = []
    await pump.connect()
    await pump.subscribe(IDD_COMMAND_CP, got.append)
    pump.delay(IDD_COMMAND_CP, 0.05)
    pump.notify(IDD_COMMAND_CP, b"late")
    pump.drop_link()
    await pump.connect()
    await pump.subscribe(IDD_COMMAND_CP, got.append)
    await asyncio.sleep(0.1)
    assert got == []  # a late answer from the old link never reaches the new one
