"""Bytes on the wire: reading replies, framing message data, refusing smuggling."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import time

from ..composer import check_transmittable
from ..diagnosis import Category, Diagnosis
from ..errors import ConnectError, DeliveryTimeout, MessageFormatError, ProtocolError
from ..reply import SmtpReply

__all__ = ["Channel", "frame_data", "normalize_data"]

MAX_REPLY_LINE = 4096  # RFC 5321 allows 512; be lenient but bounded
MAX_REPLY_LINES = 200
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_DOT_AT_LINE_START = re.compile(rb"^\.", re.MULTILINE)
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_REPLY_LINE = re.compile(r"^[2-5][0-9][0-9](?:[ -]|$)", re.ASCII)


def frame_data(data: bytes) -> bytes:
    """The DATA payload for `data`: every line ending CRLF, dot-stuffed, ending in CRLF.CRLF.

    Bare CR and bare LF are turned into CRLF, so nothing on the wire can be
    read as an end of data by one server and not by another (SMTP smuggling).
    """
    normalized = normalize_data(data)
    if normalized.startswith(b".") or b"\n." in normalized:
        normalized = _DOT_AT_LINE_START.sub(b"..", normalized)
    return normalized + b".\r\n"


def normalize_data(data: bytes) -> bytes:
    """`data` with every line ending CRLF and a final CRLF: the BDAT payload (RFC 3030).

    No dot-stuffing: BDAT counts octets, so no line can end the message early.
    """
    pairs = data.count(b"\r\n")
    if data.count(b"\r") == pairs and data.count(b"\n") == pairs:
        normalized = data  # already CRLF throughout (composed messages always are)
    else:
        normalized = _LINE_ENDINGS.sub(b"\r\n", data)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    check_transmittable(normalized)
    return normalized


def check_command(line: str) -> bytes:
    """Encode one command line, refusing anything that could split it into two."""
    if any(ch in line for ch in "\r\n\x00"):
        raise MessageFormatError("command", "line breaks are not allowed inside an SMTP command")
    return line.encode("utf-8") + b"\r\n"


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
    """A socket with a receive buffer, reading SMTP replies line by line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

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

    def _read_line(self, deadline: float, timeout: float, what: str) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end > MAX_REPLY_LINE or (end == -1 and len(self._buffer) > MAX_REPLY_LINE):
                raise ProtocolError(
                    "the server sent a reply line longer than allowed",
                    diagnosis=Diagnosis(Category.PROTOCOL, "The server does not speak SMTP."),
                )
            if end != -1:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timed_out(what, timeout)
            self.sock.settimeout(remaining)
            if _QUICKACK is not None:  # ACK at once: a server's Nagle must not wait for us
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise timed_out(what, timeout) from None
            except ssl.SSLError as exc:
                raise _lost(f"TLS: {exc.reason or exc}") from None
            except OSError as exc:
                raise _lost(exc.strerror or type(exc).__name__) from None
            if not chunk:
                raise _lost("end of stream while waiting for " + what)
            self._buffer += chunk

    def read_reply(self, timeout: float, what: str = "a reply") -> SmtpReply:
        """Read one complete (possibly multi-line) reply."""
        code: int | None = None
        texts: list[str] = []
        deadline = time.monotonic() + timeout  # for the whole reply, however it trickles in
        for _ in range(MAX_REPLY_LINES):
            raw = self._read_line(deadline, timeout, what)
            line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
            if not _REPLY_LINE.match(line):
                raise ProtocolError(
                    f"the server answered {line[:80]!r}, which is not an SMTP reply",
                    diagnosis=Diagnosis(
                        Category.PROTOCOL,
                        "The server on this port does not speak SMTP as expected.",
                        ("Check the port number and the security setting.",),
                    ),
                )
            this_code = int(line[:3])
            if code is not None and this_code != code:
                raise ProtocolError(
                    "the server mixed reply codes within one reply",
                    diagnosis=Diagnosis(Category.PROTOCOL, "The server broke the SMTP protocol."),
                )
            code = this_code
            texts.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return SmtpReply.parse(code, texts)
        raise ProtocolError(
            "the server sent a reply with too many lines",
            diagnosis=Diagnosis(Category.PROTOCOL, "The server broke the SMTP protocol."),
        )

    def wait_readable(self, other: socket.socket, timeout: float) -> bool | None:
        """Wait until reply bytes can be read (True) or `other` is readable first (False).

        None when neither happened within `timeout` seconds.
        """
        if self._buffer or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return True
        try:
            if hasattr(select, "poll"):  # no FD_SETSIZE limit (select() fails at fd 1024)
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                poller.register(other, select.POLLIN)
                ready = {fd for fd, _ in poller.poll(max(0, int(timeout * 1000)))}
                mine, theirs = self.sock.fileno() in ready, other.fileno() in ready
            else:
                readable, _, _ = select.select([self.sock, other], [], [], timeout)
                mine, theirs = self.sock in readable, other in readable
        except (OSError, ValueError):  # closed meanwhile: let the read report it
            return True
        if mine:
            return True
        return False if theirs else None

    @property
    def has_unread_data(self) -> bool:
        """True when bytes were received that no reply has consumed yet."""
        return bool(self._buffer)

    def discard_buffered(self) -> int:
        """Drop bytes received but not yet read; returns how many there were."""
        count = len(self._buffer)
        self._buffer.clear()
        return count

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
