"""The GATT client seam: what the Bluetooth drivers need from a link, and a bleak implementation.

`GattTransport` is deliberately small — connect, read, write (with or without response),
subscribe to notifications/indications, connection-state callbacks, MTU — so the drivers can be
tested against `edge.ble.peripheral_sim.SimulatedGattPeripheral` and run on a hub against
`BleakTransport`. Characteristics are named by 128-bit UUID strings; `uuid16()` expands a SIG
16-bit number.

`BleakTransport` needs BlueZ over D-Bus at runtime (Linux). Without an adapter, `connect()`
raises `AdapterUnavailableError` with the reason instead of bleak's backend-specific error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bleak import BleakClient

__all__ = [
    "AdapterUnavailableError",
    "BleakTransport",
    "ConnectionCallback",
    "GattTransport",
    "NotConnectedError",
    "NotificationCallback",
    "TransportError",
    "notifications",
    "uuid16",
]

log = logging.getLogger(__name__)

_SIG_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
DEFAULT_ATT_MTU = 23  # the minimum every LE link supports before an MTU exchange

NotificationCallback = Callable[[bytes], None]
ConnectionCallback = Callable[[bool], None]


def uuid16(number: int) -> str:
    """The 128-bit UUID string of a Bluetooth SIG 16-bit UUID (0x2AA7 → 00002aa7-…)."""
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"0x{number:X} is not a 16-bit UUID")
    return f"0000{number:04x}{_SIG_BASE_SUFFIX}"


class TransportError(ConnectionError):
    """The link failed: not connected, dropped, or the GATT operation was refused."""


class NotConnectedError(TransportError):
    """An operation needed a connection and there was none (or it dropped meanwhile)."""


class AdapterUnavailableError(TransportError):
    """No usable Bluetooth adapter (no BlueZ / D-Bus, adapter off, or bleak not installed)."""


@runtime_checkable
class GattTransport(Protocol):
    """A GATT client link to one peripheral."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def mtu(self) -> int:
        """ATT MTU; a notification carries at most mtu − 3 octets."""
        ...

    async def connect(self, timeout_s: float = 10.0) -> None: ...

    async def disconnect(self) -> None: ...

    async def read(self, uuid: str) -> bytes: ...

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None: ...

    async def subscribe(self, uuid: str, callback: NotificationCallback) -> None:
        """Enable notifications or indications (whichever the characteristic has)."""
        ...

    async def unsubscribe(self, uuid: str) -> None: ...

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        """`callback(True)` after a connection is made, `callback(False)` when it ends."""
        ...


async def notifications(
    transport: GattTransport, uuid: str, *, max_queued: int = 256
) -> AsyncIterator[bytes]:
    """Subscribe and yield each value as it arrives; ends when the link drops.

    The queue is bounded: a consumer that stops reading loses the oldest values rather than
    letting memory grow without limit on a small hub.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_queued)

    def put(item: bytes | None) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(item)

    transport.on_connection_change(lambda up: None if up else put(None))
    await transport.subscribe(uuid, put)
    try:
        while (item := await queue.get()) is not None:
            yield item
    finally:
        if transport.is_connected:
            await transport.unsubscribe(uuid)


class BleakTransport:
    """`GattTransport` over bleak (BlueZ/D-Bus on Linux, CoreBluetooth, WinRT)."""

    def __init__(self, address: str, *, pair: bool = False) -> None:
        if not address:
            raise ValueError("a device address is required")
        self.address = address
        self._pair = pair
        self._client: BleakClient | None = None
        self._listeners: list[ConnectionCallback] = []

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def mtu(self) -> int:
        return self._client.mtu_size if self.is_connected and self._client else DEFAULT_ATT_MTU

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        self._listeners.append(callback)

    def _notify_listeners(self, up: bool) -> None:
        for callback in list(self._listeners):
            try:
                callback(up)
            except Exception:  # a listener's bug must not break the link handling
                log.exception("connection listener failed")

    async def connect(self, timeout_s: float = 10.0) -> None:
        try:
            from bleak import BleakClient
            from bleak.exc import BleakError
        except ImportError as exc:
            raise AdapterUnavailableError(
                "bleak is not installed (pip install 'langerhans[ble]')"
            ) from exc
        client = BleakClient(
            self.address,
            disconnected_callback=lambda _c: self._notify_listeners(False),
            timeout=timeout_s,
            pair=self._pair,
        )
        try:
            await client.connect()
        except (FileNotFoundError, PermissionError) as exc:
            # No system D-Bus socket (or no access): there is no BlueZ to talk to.
            raise AdapterUnavailableError(
                f"no Bluetooth adapter: D-Bus/BlueZ not reachable ({exc})"
            ) from exc
        except BleakError as exc:
            name = type(exc).__name__
            if name in ("BleakBluetoothNotAvailableError", "BleakDBusError"):
                raise AdapterUnavailableError(f"no Bluetooth adapter: {exc}") from exc
            raise TransportError(f"cannot connect to {self.address}: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"cannot connect to {self.address}: {exc!r}") from exc
        self._client = client
        self._notify_listeners(True)

    async def disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.disconnect()

    def _require(self) -> BleakClient:
        if self._client is None or not self._client.is_connected:
            raise NotConnectedError(f"not connected to {self.address}")
        return self._client

    async def _guard(self, operation: Any) -> Any:
        from bleak.exc import BleakError

        try:
            return await operation
        except BleakError as exc:
            raise TransportError(str(exc)) from exc

    async def read(self, uuid: str) -> bytes:
        data = await self._guard(self._require().read_gatt_char(uuid))
        return bytes(data)

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        await self._guard(self._require().write_gatt_char(uuid, data, response=response))

    async def subscribe(self, uuid: str, callback: NotificationCallback) -> None:
        await self._guard(
            self._require().start_notify(uuid, lambda _char, value: callback(bytes(value)))
        )

    async def unsubscribe(self, uuid: str) -> None:
        await self._guard(self._require().stop_notify(uuid))
