"""A small TCP fault proxy for reliability tests (asyncio, loopback only).

It listens on 127.0.0.1, forwards every connection to one target and can be switched at run
time between five modes:

| mode | new connections | open connections |
|---|---|---|
| pass | forwarded | forwarded |
| delay | forwarded, each chunk held `delay_ms` | same |
| drop | accepted, then closed (FIN) | closed |
| reset | accepted, then reset (RST: SO_LINGER 0) | reset |
| blackhole | accepted and read, never answered | bytes read and discarded both ways |

`FaultProxy` runs in the caller's event loop; `ThreadedFaultProxy` runs one in a background
thread so a synchronous test can flip modes while real processes talk through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["FaultProxy", "Mode", "ProxyStats", "ThreadedFaultProxy"]

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 64 * 1024


class Mode(enum.StrEnum):
    PASS = "pass"
    DELAY = "delay"
    DROP = "drop"
    RESET = "reset"
    BLACKHOLE = "blackhole"


@dataclass
class ProxyStats:
    """What went through: connections accepted and bytes forwarded / swallowed."""

    accepted: int = 0
    forwarded_bytes: int = 0
    discarded_bytes: int = 0
    closed_by_fault: int = 0


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN: linger on, timeout zero."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forward 127.0.0.1:<port> to `target_host:target_port` with a switchable fault mode."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        if target_host not in {LOOPBACK, "localhost"}:
            raise ValueError("the fault proxy only forwards to loopback")
        self.target_host = target_host
        self.target_port = target_port
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.mode = Mode.PASS
        self.delay_ms = 0.0
        self.stats = ProxyStats()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, LOOPBACK, self._listen_port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            self._close(connection, hard=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def set_mode(self, mode: Mode | str, delay_ms: float = 0.0) -> None:
        """Switch mode; drop and reset also cut every open connection at once."""
        mode = Mode(mode)
        if mode is Mode.DELAY and delay_ms <= 0:
            raise ValueError("delay mode needs delay_ms > 0")
        self.mode, self.delay_ms = mode, float(delay_ms)
        if mode in {Mode.DROP, Mode.RESET}:
            for connection in list(self._connections):
                self._close(connection, hard=mode is Mode.RESET)
                self.stats.closed_by_fault += 1

    def _close(self, connection: _Connection, *, hard: bool) -> None:
        self._connections.discard(connection)
        for task in connection.tasks:
            task.cancel()
        for writer in (connection.client, connection.upstream):
            if writer is None:
                continue
            if hard:
                _reset(writer)
            else:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        connection = _Connection(client=writer)
        mode = self.mode
        if mode is Mode.DROP:
            writer.close()
            self.stats.closed_by_fault += 1
            return
        if mode is Mode.RESET:
            _reset(writer)
            self.stats.closed_by_fault += 1
            return
        self._connections.add(connection)
        if mode is Mode.BLACKHOLE:
            # Never connect upstream: the client sees an open socket that never answers.
            connection.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._connections.discard(connection)
            _reset(writer)
            return
        connection.upstream = up_writer
        to_upstream = asyncio.ensure_future(self._pump(reader, up_writer, connection))
        to_client = asyncio.ensure_future(self._pump(up_reader, writer, connection))
        connection.tasks += [to_upstream, to_client]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        if connection in self._connections:
            self._close(connection, hard=False)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(CHUNK_BYTES):
                self.stats.discarded_bytes += len(data)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        # Chunks pass through a queue with a due time so a delay keeps order without
        # stalling the reader (latency is added once per chunk, not accumulated).
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        writer_task = asyncio.ensure_future(self._drain(queue, writer))
        connection.tasks.append(writer_task)
        try:
            while data := await reader.read(CHUNK_BYTES):
                if self.mode is Mode.BLACKHOLE:
                    self.stats.discarded_bytes += len(data)
                    continue
                due = time.monotonic() + (self.delay_ms / 1000 if self.mode is Mode.DELAY else 0)
                queue.put_nowait((due, data))
            queue.put_nowait((0.0, b""))  # EOF marker: half-close after the queued data
            await writer_task
        except (OSError, asyncio.IncompleteReadError):
            writer_task.cancel()
        finally:
            if not writer_task.done():
                writer_task.cancel()

    async def _drain(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = await queue.get()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                if self.mode is Mode.BLACKHOLE:
                    self.stats.discarded_bytes += len(data)
                    continue
                writer.write(data)
                await writer.drain()
                self.stats.forwarded_bytes += len(data)


class ThreadedFaultProxy:
    """A `FaultProxy` on its own event loop in a daemon thread, driven from synchronous code."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.proxy = FaultProxy(target_host, target_port, listen_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> ThreadedFaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set_mode(self, mode: Mode | str, delay_ms: float = 0.0) -> None:
        future = asyncio.run_coroutine_threadsafe(self._set(mode, delay_ms), self._loop)
        future.result(10)

    async def _set(self, mode: Mode | str, delay_ms: float) -> None:
        self.proxy.set_mode(mode, delay_ms)

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def address(self) -> str:
        return self.proxy.address

    @property
    def stats(self) -> ProxyStats:
        return self.proxy.stats

    @classmethod
    @contextlib.contextmanager
    def running(cls, target_host: str, target_port: int) -> Iterator[ThreadedFaultProxy]:
        proxy = cls(target_host, target_port).start()
        try:
            yield proxy
        finally:
            proxy.stop()
