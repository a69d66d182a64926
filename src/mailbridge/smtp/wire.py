"""Bytes on the wire: a socket feeding the core's reply reader, with time-outs.

Framing and reply parsing live in the sans-I/O core (`_core`); this module
only moves bytes and owns the clock.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from ..diagnosis import Category, Diagnosis
from ..errors import ConnectError, DeliveryTimeout
from ..reply import SmtpReply
from ._core import ReplyReader, check_command, frame_data, normalize_data

__all__ = ["Channel", "ack_at_once", "check_command", "frame_data", "normalize_data"]

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def ack_at_once(sock: socket.socket | None) -> None:
    """Ask the kernel to ACK what arrives next at once (TCP_QUICKACK, Linux; a no-op
    elsewhere). Servers such as Postfix answer in two small writes with Nagle's
    algorithm on: the second waits for our ACK, which Linux would delay by up to 40 ms.
    Quick-ACK mode does not last, so this is asked again before every read."""
    if _QUICKACK is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def _lost(detail: str) -> ConnectError:
    return ConnectError(
        f"the connection to the server was lost ({detail})",
        diagnosis=Diagnosis(
            Category.CONNECTION_LOST,
            "The server closed the connection unexpectedly.",
            ("Try again; if it keeps happening, the server may be limiting connections.",),
        ),
        temporary=True,
    )


def timed_out(what: str, seconds: float) -> DeliveryTimeout:
    """The error for a reply that did not come in time."""
    return DeliveryTimeout(
        f"no answer from the server within {seconds:g} s while waiting for {what}",
        diagnosis=Diagnosis(
            Category.TIMEOUT,
            "The server did not answer in time.",
            ("The server or the network may be overloaded; try again later.",),
        ),
        temporary=True,
    )


class Channel:
    """A socket feeding a `ReplyReader` (the receive buffer), with time-outs."""

    def __init__(self, sock: socket.socket, reader: ReplyReader | None = None) -> None:
        self.sock = sock
        self.reader = reader if reader is not None else ReplyReader()
        self._poller: select.poll | None = None
        self._polled_with: socket.socket | None = None

    @property
    def encrypted(self) -> bool:
        """True when the socket is a TLS socket."""
        return isinstance(self.sock, ssl.SSLSocket)

    def write(self, data: bytes, timeout: float) -> None:
        """Send all of `data` or raise `ConnectError`."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise timed_out("the server to accept data", timeout) from None
        except OSError as exc:
            raise _lost(exc.strerror or type(exc).__name__) from None

    def receive(self, deadline: float, timeout: float, what: str) -> None:
        """Read what has arrived (waiting until `deadline`) into the reader."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out(what, timeout)
        sock = self.sock
        sock.settimeout(remaining)
        ack_at_once(sock)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise timed_out(what, timeout) from None
        except ssl.SSLError as exc:
            raise _lost(f"TLS: {exc.reason or exc}") from None
        except OSError as exc:
            raise _lost(exc.strerror or type(exc).__name__) from None
        if not chunk:
            raise _lost("end of stream while waiting for " + what)
        self.reader.feed(chunk)

    def read_reply(self, timeout: float, what: str = "a reply") -> SmtpReply:
        """Read one complete (possibly multi-line) reply."""
        deadline = time.monotonic() + timeout  # for the whole reply, however it trickles in
        reader = self.reader
        while True:
            if reader.buffered:
                reply = reader.next_reply()
                if reply is not None:
                    return reply
            self.receive(deadline, timeout, what)

    def wait_readable(self, other: socket.socket, timeout: float) -> bool | None:
        """Wait until reply bytes can be read (True) or `other` is readable first (False).

        None when neither happened within `timeout` seconds.
        """
        if self.reader.buffered or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return True
        try:
            if hasattr(select, "poll"):  # no FD_SETSIZE limit (select() fails at fd 1024)
                if self._poller is None or self._polled_with is not other:
                    self._poller = select.poll()  # kept: registering costs per wait add up
                    self._poller.register(self.sock, select.POLLIN)
                    self._poller.register(other, select.POLLIN)
                    self._polled_with = other
                ready = {fd for fd, _ in self._poller.poll(max(0, int(timeout * 1000)))}
                mine, theirs = self.sock.fileno() in ready, other.fileno() in ready
            else:
                readable, _, _ = select.select([self.sock, other], [], [], timeout)
                mine, theirs = self.sock in readable, other in readable
        except (OSError, ValueError):  # closed meanwhile: let the read report it
            return True
        if mine:
            return True
        return False if theirs else None

    def end_tls(self, timeout: float) -> None:
        """Send TLS close_notify (and wait for the server's, up to `timeout`); never raises."""
        if isinstance(self.sock, ssl.SSLSocket):
            self.sock.settimeout(timeout)
            with contextlib.suppress(OSError, ValueError):
                self.sock = self.sock.unwrap()

    def close(self) -> None:
        """Close the socket; never raises."""
        with contextlib.suppress(OSError):
            self.sock.close()
