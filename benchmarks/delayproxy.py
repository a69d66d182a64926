"""A TCP proxy on loopback that adds a fixed one-way delay, for latency benchmarks.

`tc netem` needs root and a kernel module; this proxy needs neither. Every chunk
read from one side is forwarded to the other side `delay` seconds after it was
read, in order. Reading never waits for the delay (each direction has a queue
of timestamped chunks and its own writer task), so the delay adds latency but
does not limit throughput: a round trip through the proxy costs 2 * delay.

    proxy = DelayProxy("127.0.0.1", server_port, delay=0.010).start()
    ... connect to proxy.host, proxy.port ...
    proxy.stop()

`stats` counts chunks, bytes and "turns" (a server-to-client chunk following
client-to-server traffic: roughly one round trip each) over all connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import attrs

__all__ = ["DelayProxy", "ProxyStats"]

CHUNK_SIZE = 65536
STOP_TIMEOUT = 5.0


@attrs.define
class ProxyStats:
    """Traffic seen by the proxy since the last `reset()` (all connections together)."""

    connections: int = 0
    chunks_up: int = 0  # client -> server
    chunks_down: int = 0  # server -> client
    bytes_up: int = 0
    bytes_down: int = 0
    turns: int = 0  # server->client chunks read right after client->server traffic
    _last_up: bool = False

    def reset(self) -> None:
        """Start counting from zero."""
        self.connections = self.chunks_up = self.chunks_down = 0
        self.bytes_up = self.bytes_down = self.turns = 0
        self._last_up = False

    def record(self, up: bool, size: int) -> None:
        """Count one chunk read from the client (`up`) or from the server."""
        if up:
            self.chunks_up += 1
            self.bytes_up += size
        else:
            self.chunks_down += 1
            self.bytes_down += size
            if self._last_up:
                self.turns += 1
        self._last_up = up


class DelayProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`, `delay` s each way.

    Runs its own event loop in a daemon thread. `start()` returns self with
    `port` set; `stop()` closes the listener and every connection within a
    bounded time.
    """

    def __init__(
        self, target_host: str, target_port: int, delay: float, host: str = "127.0.0.1"
    ) -> None:
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.host = host
        self.port = 0
        self.stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> DelayProxy:
        """Start listening on a free port of `host`; returns self."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="DelayProxy", daemon=True)
        self._thread.start()
        if not ready.wait(STOP_TIMEOUT):
            raise RuntimeError("the proxy's event loop did not start")
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, self.host, 0), loop
        )
        self._server = future.result(STOP_TIMEOUT)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the thread (bounded)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), STOP_TIMEOUT)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(STOP_TIMEOUT + 1)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- forwarding ----------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._writers.add(client_w)
        try:
            await self._connect_and_forward(client_r, client_w)
        except asyncio.CancelledError:
            # stop() cancels; ending normally keeps Python 3.11's asyncio.streams from
            # logging the cancelled connection task as an error.
            return
        finally:
            client_w.transport.abort()
            self._writers.discard(client_w)

    async def _connect_and_forward(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            server_r, server_w = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), STOP_TIMEOUT
            )
        except (OSError, TimeoutError):
            return
        self._writers.add(server_w)
        self.stats.connections += 1
        for writer in (client_w, server_w):  # asyncio sets it already; be explicit
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, up=True, source=client_w),
                self._pipe(server_r, client_w, up=False, source=server_w),
            )
        finally:
            server_w.transport.abort()
            self._writers.discard(server_w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        up: bool,
        source: asyncio.StreamWriter,
    ) -> None:
        """Read chunks as soon as they come; a second task writes each one `delay` later.

        The proxy stands in for a wire, and a wire does not delay ACKs: after every
        read it asks the kernel to ACK at once (TCP_QUICKACK), so that a peer's
        Nagle algorithm does not wait 40 ms for the proxy's delayed ACK, which the
        real other end would not have sent that late.
        """
        source_sock = source.get_extra_info("socket")
        quickack = getattr(socket, "TCP_QUICKACK", None)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:  # end of stream
                    if writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            while True:
                try:
                    chunk = await reader.read(CHUNK_SIZE)
                except OSError:
                    chunk = b""
                if quickack is not None and source_sock is not None:
                    with contextlib.suppress(OSError):
                        source_sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                queue.put_nowait((loop.time() + self.delay, chunk))  # b"" marks the end
                if not chunk:
                    break
                self.stats.record(up, len(chunk))
            await sender
        except (OSError, ConnectionError):
            pass
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await sender
