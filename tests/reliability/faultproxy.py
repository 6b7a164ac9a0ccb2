"""A fault-injecting TCP proxy on loopback, for tests: latency, throttling, dropped connections, freezing.

It forwards bytes, it does not parse HTTP (except to remember each connection's first request line, so that
a test can drop "the SSE stream" and nothing else). Faults are switched at run time, from any thread::

    with FaultProxy(server.url) as proxy:
        client = Wan2GPClient(proxy.url, ...)
        proxy.latency = 0.2            # seconds added to every chunk, each way (not cumulative)
        proxy.bandwidth = 256 * 1024   # bytes per second, each way, per connection
        proxy.drop("/queue/data")      # reset the connections whose first request line contains this
        proxy.freeze()                 # nothing moves (new connections are accepted, never answered)
        proxy.thaw()                   # what was held back flows again
        proxy.refuse = True            # new connections are closed at once (the server looks gone)

The proxy runs an asyncio loop on a daemon thread; ``stop()`` closes everything and ends the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

_EOF = b""
_CHUNK = 64 * 1024


@dataclass
class _Connection:
    id: int
    first_line: str = ""
    tasks: list[asyncio.Task] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:<free port>`` to the host and port of ``upstream`` (a URL)."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "the proxy only forwards to loopback"
        self.upstream = (parts.hostname, parts.port or 80)
        self.latency = 0.0
        self.bandwidth: int | None = None
        self.refuse = False
        self.port: int | None = None
        self.url: str | None = None
        self.accepted = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: dict[int, _Connection] = {}
        self._next_id = 0

    # --- life cycle -----------------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}/"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        assert self.url is not None
        return self.url

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for conn in list(self._connections.values()):
                self._kill(conn)
            assert self._flowing is not None
            self._flowing.set()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ---------------------------------------------------------------------------------------

    def freeze(self) -> None:
        """Nothing moves either way; new connections are accepted and never answered."""
        self._call(lambda: self._flowing.clear())  # type: ignore[union-attr]

    def thaw(self) -> None:
        self._call(lambda: self._flowing.set())  # type: ignore[union-attr]

    def drop(self, match: str | None = None) -> int:
        """Reset the open connections (those whose first request line contains ``match``). Returns how many."""
        async def run() -> int:
            chosen = [c for c in self._connections.values() if match is None or match in c.first_line]
            for conn in chosen:
                self._kill(conn)
            self.dropped += len(chosen)
            return len(chosen)

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def connections(self) -> list[str]:
        """First request line of each open connection."""
        return [c.first_line for c in list(self._connections.values())]

    def wait_for(self, match: str, timeout: float = 10.0) -> bool:
        """Wait until an open connection's first request line contains ``match``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(match in line for line in self.connections()):
                return True
            time.sleep(0.01)
        return False

    # --- inside ---------------------------------------------------------------------------------------

    def _call(self, fn) -> None:
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def _kill(self, conn: _Connection) -> None:
        for writer in conn.writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()  # a reset, not a clean close: as when a link or a process dies
        for task in conn.tasks:
            task.cancel()
        self._connections.pop(conn.id, None)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            client_writer.transport.abort()
            return
        self._next_id += 1
        conn = _Connection(self._next_id)
        self._connections[conn.id] = conn
        conn.writers.append(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()  # upstream gone: the client sees a reset
            self._connections.pop(conn.id, None)
            return
        conn.writers.append(upstream_writer)
        loop = asyncio.get_running_loop()
        conn.tasks = [
            loop.create_task(self._pipe(conn, client_reader, upstream_writer, first=True)),
            loop.create_task(self._pipe(conn, upstream_reader, client_writer, first=False)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        for writer in conn.writers:
            with contextlib.suppress(Exception):
                writer.close()
        self._connections.pop(conn.id, None)

    async def _pipe(self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    *, first: bool) -> None:
        """Read as fast as it comes; deliver each chunk ``latency`` after it came, at ``bandwidth``, when flowing."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            head = first
            while True:
                data = await reader.read(_CHUNK)
                if head and data:
                    conn.first_line = data.split(b"\r\n", 1)[0].decode("latin-1")[:200]
                    head = False
                await queue.put((time.monotonic(), data))
                if not data:
                    return

        reading = asyncio.get_running_loop().create_task(read())
        try:
            while True:
                arrived, data = await queue.get()
                assert self._flowing is not None
                await self._flowing.wait()
                delay = arrived + self.latency - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                if data == _EOF:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                if self.bandwidth:
                    for i in range(0, len(data), 4096):
                        piece = data[i:i + 4096]
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(len(piece) / self.bandwidth)
                else:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            for other in conn.writers:
                with contextlib.suppress(Exception):
                    other.transport.abort()
        finally:
            reading.cancel()
