"""A hostile HTTP(S) server on loopback that sends its answer one byte at a time.

Used by the fetch and discovery tests and by benchmarks/fetch_hostile.py.
Every connection is served in its own thread; each thread stops after
`max_seconds` or when the server is stopped, and `stop()` joins them all.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from types import TracebackType

BODY = b"<clientConfig/>" * 20
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n" + b"X-Pad: slow\r\n" * 40


class TrickleServer:
    """Answers every request with a 200 whose headers (or body) arrive slowly.

    `part="headers"` trickles the status line and headers; `part="body"` sends
    the headers at once and trickles the body. `ssl_context` serves HTTPS.
    """

    def __init__(
        self,
        part: str = "headers",
        *,
        interval: float = 0.5,
        max_seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.part = part
        self.interval = interval
        self.max_seconds = max_seconds
        self.ssl_context = ssl_context
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        stop_at = time.monotonic() + self.max_seconds
        with contextlib.suppress(OSError), conn:
            conn.settimeout(self.max_seconds)
            sock: socket.socket = conn
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                request += chunk
            head = HEADERS + b"Content-Length: %d\r\n\r\n" % len(BODY)
            if self.part == "body":
                sock.sendall(head)
                slow = BODY
            else:
                slow = head + BODY
            for byte in slow:
                if self._stop.wait(self.interval) or time.monotonic() > stop_at:
                    return
                sock.sendall(bytes([byte]))

    def start(self) -> TrickleServer:
        """Start accepting connections."""
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop serving and join every thread."""
        self._stop.set()
        self._listener.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> TrickleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
