"""imaplib bounded: every read counted and under a per-command deadline, TLS without leftovers.

`BoundedIMAP4` replaces imaplib's reading (its documented `read`, `readline`,
`send` and `starttls` methods) with one that owns the receive
buffer, so that a hostile server cannot make a command take longer than its
deadline, announce a literal larger than the cap, stream answers without end,
or slip responses in before the STARTTLS handshake.
"""

from __future__ import annotations

import contextlib
import imaplib
import math
import socket
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from ..diagnosis import Category, Diagnosis
from ..errors import (
    ConfigurationError,
    ImapConnectionLost,
    ImapLimitExceeded,
    ImapTimeout,
    TlsError,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["BoundedIMAP4", "ImapLimits"]

_MIB = 1024 * 1024
_MAX_LINE = 1_000_000  # imaplib's own line limit
_CHUNK = 65536


def _positive(_instance: Any, attribute: Any, value: float) -> None:
    if not math.isfinite(value) or value <= 0:  # NaN compares false: it would end no deadline
        raise ConfigurationError(attribute.name, "must be a positive, finite number")


@attrs.frozen
class ImapLimits:
    """How much an IMAP server may send for one command, and how long it may take.

    `max_literal_bytes`: the largest literal (a message or part body) accepted;
    a larger one is refused as soon as it is announced. `max_command_bytes` and
    `max_lines`: everything received for one command. `command_seconds`: the
    wait for the server's answer, however slowly the bytes trickle in (each
    read also waits at most the settings' `command_timeout`); it starts when the
    command is sent and again after a literal (an APPEND's message) is written,
    so a slow upload does not count, while each 64 KiB of it must leave within
    `command_timeout`. Past any limit the connection is closed and an
    `ImapLimitExceeded` or `ImapTimeout` raised. All values must be positive
    and finite.
    """

    max_literal_bytes: int = attrs.field(default=64 * _MIB, validator=_positive)
    max_command_bytes: int = attrs.field(default=256 * _MIB, validator=_positive)
    max_lines: int = attrs.field(default=100_000, validator=_positive)
    command_seconds: float = attrs.field(default=60.0, validator=_positive)

    @classmethod
    def for_parts(cls, max_part_bytes: int, **changes: Any) -> ImapLimits:
        """Limits for fetching attachment parts of at most `max_part_bytes` (decoded).

        The literal cap leaves room for base64 (4/3) and line breaks: twice the
        part size plus 64 KiB; a command may carry four such literals.
        """
        literal = 2 * max_part_bytes + 64 * 1024
        return cls(max_literal_bytes=literal, max_command_bytes=4 * literal + _MIB, **changes)


def _lost(text: str) -> ImapConnectionLost:
    return ImapConnectionLost(
        text,
        diagnosis=Diagnosis(
            Category.CONNECTION_LOST,
            "The connection to the IMAP server was lost.",
            ("Try again; if it keeps happening, the server may be overloaded.",),
        ),
        temporary=True,
    )


def _too_much(text: str) -> ImapLimitExceeded:
    return ImapLimitExceeded(
        text,
        diagnosis=Diagnosis(
            Category.PROTOCOL,
            "The IMAP server sent more than mailbridge accepts for one command.",
            ("The connection was closed. A message may be too large for the configured limits.",),
        ),
    )


class _CheckedContext:
    """Wraps the SSL context given to imaplib's STARTTLS: checks the plaintext is used up."""

    def __init__(self, context: ssl.SSLContext, imap: BoundedIMAP4) -> None:
        self._context = context
        self._imap = imap

    def wrap_socket(self, sock: socket.socket, **kwargs: Any) -> ssl.SSLSocket:
        self._imap.before_handshake()
        return self._context.wrap_socket(sock, **kwargs)


class BoundedIMAP4(imaplib.IMAP4):
    """An `imaplib.IMAP4` (plain, STARTTLS or implicit TLS) whose reads are bounded."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
        limits: ImapLimits,
    ) -> None:
        self.limits = limits
        self._implicit_context = ssl_context
        self._read_timeout = read_timeout
        self._buffer = bytearray()
        self._broken: str | None = None
        self.failure: Exception | None = None  # why the wire was closed (imaplib rewraps it)
        # A time.monotonic() end for a whole operation of several commands (an import).
        self.operation_deadline: float | None = None
        self._last_tag = b""
        self._idle = False
        self._start_command()
        try:
            super().__init__(host, port, timeout=connect_timeout)
        except imaplib.IMAP4.error as exc:
            self._raise_greeting_failure(exc)
            raise

    def _raise_greeting_failure(self, exc: imaplib.IMAP4.error) -> None:
        """Typed errors for a server that closes or says BYE instead of greeting.

        imaplib reports both as a bare `error`/`abort` ("socket error: EOF",
        the BYE line) that would read as a protocol violation.
        """
        welcome = getattr(self, "welcome", b"")
        if isinstance(self.failure, ImapConnectionLost):
            failure: Exception = self.failure
        elif isinstance(welcome, bytes) and welcome[:6].upper() == b"* BYE ":
            text = welcome[6:200].decode("utf-8", "replace").strip()
            failure = ImapConnectionLost(
                f"the IMAP server refused the connection at its greeting: {text!r}",
                diagnosis=Diagnosis(
                    Category.SERVER_UNAVAILABLE,
                    "The IMAP server does not accept connections right now.",
                    (
                        "Try again later; servers say this when they are busy or limit "
                        "connections per account or address.",
                    ),
                ),
                temporary=True,
            )
        else:
            return
        self.failure = None
        with contextlib.suppress(OSError, AttributeError):
            self.shutdown()
        raise failure from exc

    # -- imaplib's hooks -------------------------------------------------------------

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        # imaplib's connection hook (3.9+, also what imapclient overrides); imaplib's own
        # open() then wraps it in a file object, which this class never reads from.
        sock = socket.create_connection((self.host, self.port), timeout)
        if self._implicit_context is not None:
            try:
                return self._implicit_context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def send(self, data: Buffer) -> None:
        """Send, starting a new command's budget when `data` opens a tagged command.

        The deadline covers waiting for the server, not our own upload: it starts
        again once a literal (an APPEND's message) is written. The upload goes out
        in chunks, each within the read time-out, so a stalled upload still fails.
        """
        if self._broken is not None:
            raise _lost(self._broken)
        data = bytes(data)
        head = data[:64]  # a command line starts with its tag; literals can be large
        tag = head.split(b" ", 1)[0]
        opens = False
        if tag != self._last_tag and tag in self.tagged_commands:
            self._last_tag = tag
            self._idle = head[len(tag) :].strip().upper() == b"IDLE"
            opens = True
        elif self._idle and head.strip().upper() == b"DONE":
            self._idle = False
            opens = True
        if opens:
            self._start_command()
        sys.audit("imaplib.send", self, data)
        sock = self.sock
        if sock.gettimeout() == 0.0:  # imapclient's idle_check polls non-blocking
            sock.sendall(data)
            return
        with memoryview(data) as view:
            for start in range(0, len(data), _CHUNK):
                sock.settimeout(self._read_timeout)
                try:
                    sock.sendall(view[start : start + _CHUNK])
                except TimeoutError:
                    self._timed_out("the IMAP server stopped taking what mailbridge sent")
        if not opens:  # a literal or the end of a command after one: wait afresh
            self._deadline = time.monotonic() + self.limits.command_seconds

    def read(self, size: int) -> bytes:
        """A literal of `size` bytes, refused before reading when over the cap."""
        if size > self.limits.max_literal_bytes:
            self._abort(
                _too_much(
                    f"the IMAP server announced a literal of {size} bytes, over the limit "
                    f"of {self.limits.max_literal_bytes}"
                )
            )
        while len(self._buffer) < size:
            self._recv()
        with memoryview(self._buffer) as view:  # one copy: at most twice the literal in memory
            data = bytes(view[:size])
        del self._buffer[:size]
        return data

    def readline(self) -> bytes:
        """One line (up to imaplib's 1 MB limit), or b"" at the end of the stream."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                break
            if len(self._buffer) > _MAX_LINE:
                self._abort(_too_much(f"the IMAP server sent a line over {_MAX_LINE} bytes"))
            searched = len(self._buffer)
            if not self._recv(eof_ok=True):
                line = bytes(self._buffer)
                self._buffer.clear()
                if self._broken is None:  # imaplib turns b"" into a bare abort: keep why
                    self._broken = "the IMAP server closed the connection" + (
                        "" if self._last_tag or hasattr(self, "welcome") else " before its greeting"
                    )
                    self.failure = _lost(self._broken)
                return line
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        self._lines += 1
        if self._lines > self.limits.max_lines:
            self._abort(
                _too_much(
                    f"the IMAP server sent more than {self.limits.max_lines} lines for one command"
                )
            )
        return line

    def starttls(self, ssl_context: Any = None) -> Any:
        """imaplib's STARTTLS, refusing anything the server sent after its OK in plaintext."""
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
        return super().starttls(ssl_context=_CheckedContext(ssl_context, self))

    # -- bookkeeping -----------------------------------------------------------------

    def before_handshake(self) -> None:
        """Nothing read before TLS is trusted: refuse bytes after the OK, forget the rest."""
        if self._buffer:
            self._abort(
                TlsError(
                    "the IMAP server sent data after its OK to STARTTLS, before the "
                    "handshake (a response injection attack); refusing to continue",
                    diagnosis=Diagnosis(
                        Category.TLS_HANDSHAKE,
                        "Something on the network tampered with the start of encryption.",
                        (
                            "Use SSL/TLS on port 993 if the server offers it.",
                            "Tell the email provider: its STARTTLS answer carried extra data.",
                        ),
                    ),
                )
            )
        self.untagged_responses.clear()  # CAPABILITY is asked again after the handshake

    def _start_command(self) -> None:
        self._deadline = time.monotonic() + self.limits.command_seconds
        self._received = 0
        self._lines = 0

    def _first_deadline(self) -> tuple[float, str]:
        """The command's or the operation's deadline, whichever ends first, and its text."""
        if self.operation_deadline is not None and self.operation_deadline < self._deadline:
            return self.operation_deadline, "the IMAP operation did not complete in its time"
        return self._deadline, (
            f"the IMAP command did not complete within {self.limits.command_seconds:g} seconds"
        )

    def _abort(self, error: Exception) -> NoReturn:
        if self._broken is None:
            self._broken = str(error)
            self.failure = error
            self._buffer.clear()
            with contextlib.suppress(OSError, AttributeError):
                self.sock.close()
        raise error

    def _recv(self, *, eof_ok: bool = False) -> int:
        if self._broken is not None:
            raise _lost(self._broken)
        sock = self.sock
        blocking = sock.gettimeout() != 0.0  # imapclient's idle_check polls non-blocking
        deadline, late = self._first_deadline()
        if blocking:  # while idle_check polls, the caller bounds the time (see send)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(late)
            sock.settimeout(min(self._read_timeout, remaining))
        try:
            data = sock.recv(_CHUNK)
        except TimeoutError:
            if time.monotonic() >= deadline:
                self._timed_out(late)
            if not self._last_tag:  # no command yet: the greeting never came
                self._not_greeted()
            self._timed_out("the IMAP server stopped answering in the middle of a command")
        except (BlockingIOError, ssl.SSLWantReadError):
            raise
        except OSError as exc:
            self._abort(_lost(f"the IMAP connection failed ({type(exc).__name__})"))
        if not data:
            if eof_ok:
                return 0
            self._abort(_lost("the IMAP server closed the connection in the middle of a response"))
        self._received += len(data)
        if self._received > self.limits.max_command_bytes:
            self._abort(
                _too_much(
                    f"the IMAP server sent more than {self.limits.max_command_bytes} bytes "
                    "for one command"
                )
            )
        self._buffer += data
        return len(data)

    def _not_greeted(self) -> NoReturn:
        hints = ("Check the server name and port.",)
        if self._implicit_context is None:  # plain or STARTTLS: maybe the port wants TLS
            hints = ("The port may expect SSL/TLS at once: port 993 usually needs SSL/TLS.",)
        self._abort(
            ImapTimeout(
                "the IMAP server did not greet",
                diagnosis=Diagnosis(Category.TIMEOUT, "The IMAP server did not greet.", hints),
                temporary=True,
            )
        )

    def _timed_out(self, text: str) -> NoReturn:
        self._abort(
            ImapTimeout(
                text,
                diagnosis=Diagnosis(
                    Category.TIMEOUT,
                    "The IMAP server took too long to answer.",
                    ("Try again later; if it keeps happening, the server may be overloaded.",),
                ),
                temporary=True,
            )
        )
