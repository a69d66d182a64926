"""A TCP proxy on loopback that adds a fixed one-way delay, for latency benchmarks.

`tc netem` needs root and a kernel module; this proxy needs neither. Every chunk
read from one side is forwarded to the other side `delay` seconds after it was
read, in order. Reading never waits for the delay (each direction has a reader
thread that timestamps what it reads and a writer thread that sends each chunk
when it is due), so the delay adds latency but does not limit throughput: a
round trip through the proxy costs 2 * delay.

Threads, not an event loop: asyncio's timers wake on whole milliseconds (epoll's
time-out), which added 0.5 ms per hop on average, 1 ms per round trip, to every
figure; `time.sleep` keeps each hop within ~0.1 ms of `delay`.

    proxy = DelayProxy("127.0.0.1", server_port, delay=0.010).start()
    ... connect to proxy.host, proxy.port ...
    proxy.stop()

`stats` counts chunks, bytes and "turns" (a server-to-client chunk following
client-to-server traffic: roughly one round trip each) over all connections.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable

import attrs

__all__ = ["DelayProxy", "ProxyStats"]

CHUNK_SIZE = 65536
STOP_TIMEOUT = 5.0
ACCEPT_POLL = 0.2  # how often the accepting thread looks whether stop() was called


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
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False, eq=False)

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.connections = self.chunks_up = self.chunks_down = 0
            self.bytes_up = self.bytes_down = self.turns = 0
            self._last_up = False

    def record(self, up: bool, size: int) -> None:
        """Count one chunk read from the client (`up`) or from the server."""
        with self._lock:
            if up:
                self.chunks_up += 1
                self.bytes_up += size
            else:
                self.chunks_down += 1
                self.bytes_down += size
                if self._last_up:
                    self.turns += 1
            self._last_up = up

    def connected(self) -> None:
        """Count one connection made to the target."""
        with self._lock:
            self.connections += 1


class DelayProxy:
    """Forwards `host`:`port` to `target_host`:`target_port`, `delay` s each way.

    `start()` returns self with `port` set; `stop()` closes the listener and
    every connection and joins every thread within a bounded time.
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
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> DelayProxy:
        """Start listening on a free port of `host`; returns self."""
        if self._listener is not None:
            return self
        listener = socket.create_server((self.host, 0))
        listener.settimeout(ACCEPT_POLL)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "DelayProxy-accept")
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then join the threads (bounded)."""
        if self._listener is None:
            return
        self._stopping.set()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for sock in sockets:
            sock.close()
        self._listener.close()
        self._listener = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._sockets.add(sock)
            return True

    # -- forwarding ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if not self._track(client):
                client.close()
                return
            self._spawn(self._connect, "DelayProxy-connect", client)

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(
                (self.target_host, self.target_port), timeout=STOP_TIMEOUT
            )
        except OSError:
            client.close()
            return
        server.settimeout(None)
        if not self._track(server):
            server.close()
            return
        self.stats.connected()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for source, sink, up in ((client, server, True), (server, client, False)):
            chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
            self._spawn(self._read, "DelayProxy-read", source, chunks, up)
            self._spawn(self._write, "DelayProxy-write", sink, chunks)

    def _read(
        self, source: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]], up: bool
    ) -> None:
        """Read chunks as soon as they come, each stamped with the time it is due.

        The proxy stands in for a wire, and a wire does not delay ACKs: after every
        read it asks the kernel to ACK at once (TCP_QUICKACK), so that a peer's
        Nagle algorithm does not wait 40 ms for the proxy's delayed ACK, which the
        real other end would not have sent that late.
        """
        quickack = getattr(socket, "TCP_QUICKACK", None)
        while True:
            try:
                chunk = source.recv(CHUNK_SIZE)
            except OSError:
                chunk = b""
            chunks.put((time.monotonic() + self.delay, chunk))  # b"" marks the end
            if not chunk:
                return
            if quickack is not None:
                with contextlib.suppress(OSError):
                    source.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            self.stats.record(up, len(chunk))

    def _write(self, sink: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        """Send every chunk when it is due; at the end of the stream, pass the end on."""
        failed = False
        while True:
            due, chunk = chunks.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not chunk:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if failed:
                continue  # drain until the reader ends
            try:
                sink.sendall(chunk)
            except OSError:
                failed = True
