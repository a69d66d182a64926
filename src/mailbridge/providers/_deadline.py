"""One deadline for everything a socket does: connect, TLS, every read and write.

A per-read time-out lets a server that trickles one byte at a time keep a
reader forever. `SocketDeadline` shuts the connection down when the deadline
passes, so whatever is blocked on it (inside `ssl`, `http.client` or our own
reads) returns at once with an error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

__all__ = ["SocketDeadline"]


class SocketDeadline:
    """Shuts `sock`'s connection down at monotonic time `deadline` unless closed before.

    Keeps its own duplicate of the descriptor, so it still works after the
    socket was wrapped in TLS (which takes the original over).
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._watch = sock.dup()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut)
        self._timer.daemon = True
        self._timer.name = "mailbridge-socket-deadline"
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        self._timer.start()

    def _cut(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self.expired = True
            self._watch.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop watching (the deadline no longer applies) and release the duplicate."""
        self._timer.cancel()
        with self._lock:
            self._watch.close()

    def __enter__(self) -> SocketDeadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
