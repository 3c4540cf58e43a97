"""The fault proxy itself: each mode does what the reliability scenarios rely on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.reliability.faultproxy import FaultProxy, Mode, ThreadedFaultProxy


class Echo:
    """A loopback echo server that counts the connections it saw."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[FaultProxy, Echo]]:
    echo = Echo()
    port = await echo.start()
    proxy = FaultProxy("127.0.0.1", port)
    await proxy.start()
    yield proxy, echo
    await proxy.stop()
    assert echo.server is not None
    echo.server.close()


async def _roundtrip(port: int, payload: bytes, timeout_s: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout_s)
    finally:
        writer.close()


async def test_pass_forwards_both_ways(proxied: tuple[FaultProxy, Echo]) -> None:
    proxy, echo = proxied
    payload = bytes(range(256)) * 1000  # larger than one chunk
    assert await _roundtrip(proxy.port, payload) == payload
    assert echo.connections == 1
    assert proxy.stats.forwarded_bytes == 2 * len(payload)


async def test_delay_adds_latency_each_way_and_keeps_order(
    proxied: tuple[FaultProxy, Echo],
) -> None:
    proxy, _ = proxied
    proxy.set_mode(Mode.DELAY, delay_ms=150)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    started = time.monotonic()
    for n in range(5):
        writer.write(f"{n};".encode())
        await writer.drain()
    echoed = b""
    while len(echoed) < 10:
        echoed += await asyncio.wait_for(reader.read(100), 3.0)
    elapsed_s = time.monotonic() - started
    writer.close()
    assert echoed == b"0;1;2;3;4;"
    # Each direction holds every chunk 150 ms; the delay is not accumulated per chunk.
    assert 0.3 <= elapsed_s < 1.0


async def test_drop_accepts_then_closes_cleanly(proxied: tuple[FaultProxy, Echo]) -> None:
    proxy, echo = proxied
    proxy.set_mode(Mode.DROP)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await asyncio.wait_for(reader.read(10), 2.0) == b""  # orderly EOF
    writer.close()
    assert echo.connections == 0


async def test_reset_sends_rst(proxied: tuple[FaultProxy, Echo]) -> None:
    proxy, echo = proxied
    proxy.set_mode(Mode.RESET)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 2.0)
    writer.close()
    assert echo.connections == 0


async def test_blackhole_reads_and_never_answers(proxied: tuple[FaultProxy, Echo]) -> None:
    proxy, echo = proxied
    proxy.set_mode(Mode.BLACKHOLE)
    with pytest.raises(TimeoutError):
        await _roundtrip(proxy.port, b"hello?", timeout_s=0.5)
    await asyncio.sleep(0.05)
    assert echo.connections == 0
    assert proxy.stats.discarded_bytes == 6


async def test_blackhole_freezes_an_open_connection_and_pass_revives_new_ones(
    proxied: tuple[FaultProxy, Echo],
) -> None:
    proxy, _ = proxied
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"one")
    assert await asyncio.wait_for(reader.readexactly(3), 2.0) == b"one"
    proxy.set_mode(Mode.BLACKHOLE)
    writer.write(b"two")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(3), 0.5)
    writer.close()
    proxy.set_mode(Mode.PASS)
    assert await _roundtrip(proxy.port, b"three") == b"three"


async def test_switching_to_reset_cuts_open_connections(proxied: tuple[FaultProxy, Echo]) -> None:
    proxy, _ = proxied
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 2.0) == b"x"
    proxy.set_mode(Mode.RESET)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 2.0)
    writer.close()
    assert proxy.stats.closed_by_fault == 1


def test_threaded_proxy_is_driven_from_synchronous_code() -> None:
    async def scenario(port: int) -> tuple[bytes, bytes]:
        return await _roundtrip(port, b"sync"), b""

    async def serve_echo() -> None:
        echo = Echo()
        target = await echo.start()
        loop = asyncio.get_running_loop()
        with ThreadedFaultProxy.running("127.0.0.1", target) as proxy:
            assert (await scenario(proxy.port))[0] == b"sync"
            await loop.run_in_executor(None, proxy.set_mode, Mode.DROP)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.read(1), 2.0) == b""
            writer.close()
        assert echo.server is not None
        echo.server.close()

    asyncio.run(serve_echo())


def test_only_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("10.0.0.1", 80)
    with pytest.raises(ValueError, match="delay_ms"):
        FaultProxy("127.0.0.1", 80).set_mode(Mode.DELAY)
