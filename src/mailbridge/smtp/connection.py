"""One SMTP client connection: the sync I/O layer over the sans-I/O core (`_core`).

Sockets, TLS wrapping, time-outs and the steps' clock live here; what to
write and how each reply is judged come from the core's exchanges.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .. import diagnostics
from .._results import Step, Transaction
from ..diagnosis import Category, Diagnosis
from ..errors import AuthenticationError, ConnectError, DeliveryError
from ..oauth._provider import fetch_token
from ..reply import SmtpReply
from ..settings import SmtpSettings
from ._core import (
    Attempt,
    Exchange,
    command_exchange,
)
from ._opening import (
    MAX_ADDRESSES_TRIED,
    Connect,
    FetchToken,
    ReadGreeting,
    Request,
    RunExchange,
    SessionState,
    SocketName,
    StartTls,
    drive_opening,
    opening,
)
from .pipeline import Pipeline
from .wire import Channel

__all__ = ["SmtpConnection", "Step", "Transaction"]

log = logging.getLogger("mailbridge.smtp")


T = TypeVar("T")


class SmtpConnection(SessionState):
    """A connected, greeted, secured and (when credentials are set) authenticated session.

    Use `SmtpConnection.open(settings)`. This is the sync I/O layer: what is
    written and how replies are judged comes from the core (`_core`).
    `send()` runs one transaction; with
    PIPELINING the whole envelope and DATA go out in one write. Several threads
    may call `send()` at once on a PIPELINING connection: their transactions
    are pipelined one after another (see `pipeline.py`), each thread getting
    its own result.
    """

    def __init__(self, settings: SmtpSettings, observer: Callable[[Step], None] | None = None):
        super().__init__(settings, observer)
        self._channel: Channel | None = None
        # Whether other threads may queue messages while one waits for a reply (the pool
        # says no when it never shares); waits then also watch for them.
        self.shareable = True
        self._pipeline = Pipeline(self)

    @classmethod
    def open(
        cls,
        settings: SmtpSettings,
        observer: Callable[[Step], None] | None = None,
        greeting_timeout: float | None = None,
    ) -> SmtpConnection:
        """Connect, secure and log in as `settings` say; raises a `DeliveryError` on failure."""
        connection = cls(settings, observer)
        try:
            connection._open(greeting_timeout or settings.command_timeout)
        except AuthenticationError:
            connection.quit()  # the session is in step: end it politely, TLS included
            raise
        except BaseException:
            connection.close()
            raise
        return connection

    # -- opening ---------------------------------------------------------------

    def _open(self, greeting_timeout: float) -> None:
        drive_opening(opening(self, greeting_timeout, self._observer), self._perform)

    def _perform(self, request: Request) -> Any:
        """The I/O of one step of the opening sequence (`_opening.py`)."""
        if isinstance(request, RunExchange):
            return self.run_exchange(request.exchange)
        if isinstance(request, ReadGreeting):
            return self.read_reply("the greeting", request.timeout)
        if isinstance(request, SocketName):
            try:
                return self._require_channel().sock.getsockname()
            except OSError:
                return None
        if isinstance(request, StartTls):
            return self._wrap_tls()
        if isinstance(request, Connect):
            self._channel = Channel(self._connect(request.infos), self.reader)
            return None
        if isinstance(request, FetchToken):
            assert self.settings.oauth2_token is not None
            return fetch_token(self.settings.oauth2_token, refused=request.refused)
        return socket.getaddrinfo(self.settings.host, self.settings.port, type=socket.SOCK_STREAM)

    def _connect(self, infos: Sequence[tuple[object, ...]]) -> socket.socket:
        error: OSError | None = None
        for family, kind, proto, _, address in infos[:MAX_ADDRESSES_TRIED]:
            sock = socket.socket(family, kind, proto)  # type: ignore[arg-type]
            sock.settimeout(self.settings.connect_timeout)
            try:
                sock.connect(address)  # type: ignore[arg-type]
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        assert error is not None
        raise diagnostics.connect_failed(error, self.settings) from None

    def _wrap_tls(self) -> str:
        channel = self._require_channel()
        context = self.settings.create_ssl_context()
        channel.sock.settimeout(self.settings.connect_timeout)
        try:
            tls = context.wrap_socket(channel.sock, server_hostname=self.settings.host)
        except OSError as exc:  # ssl.SSLError, TimeoutError and a dropped connection
            raise diagnostics.tls_failed(exc, self.settings) from None
        self._channel = Channel(tls, self.reader)
        return f"{tls.version()} {(tls.cipher() or ('?',))[0]}"

    # -- talking ---------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        """True when the session runs over TLS."""
        return self._channel is not None and self._channel.encrypted

    @property
    def is_open(self) -> bool:
        """True until the connection is closed or lost."""
        return self._channel is not None

    def _require_channel(self) -> Channel:
        if self._channel is None:
            raise ConnectError(
                "the connection is closed",
                diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was closed."),
                temporary=True,
            )
        return self._channel

    def read_reply(self, what: str, timeout: float | None = None) -> SmtpReply:
        """Read the next reply; a lost connection or a 421 closes this connection."""
        channel = self._require_channel()
        try:
            reply = channel.read_reply(timeout or self.settings.command_timeout, what)
        except DeliveryError:
            self.close()
            raise
        log.debug("S: %s", reply)
        if reply.closes_connection:
            self.close()
        return reply

    def write_bytes(
        self, data: bytes, timeout: float | None = None, *, keep_open: bool = False
    ) -> None:
        """Write raw bytes; a failure closes this connection (unless `keep_open`, so that
        replies which already arrived can still be read)."""
        channel = self._require_channel()
        try:
            channel.write(data, timeout or self.settings.command_timeout)
        except DeliveryError:
            if not keep_open:
                self.close()
            raise

    def run_exchange(self, exchange: Exchange[T]) -> T:
        """Run one of the core's exchanges: write each command, send it the reply."""
        try:
            command = next(exchange)
            while True:
                log.debug("C: %s", command.shown)
                self.write_bytes(command.data)
                command = exchange.send(self.read_reply(command.what))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def command(self, line: str) -> SmtpReply:
        """Send one command and return its reply."""
        return self.run_exchange(command_exchange(line))

    def noop(self) -> SmtpReply:
        """NOOP: checks that the session is still alive."""
        return self.command("NOOP")

    @property
    def channel(self) -> Channel:
        """The open channel; raises `ConnectError` when the connection is closed."""
        return self._require_channel()

    @property
    def messages_sent(self) -> int:
        """How many messages the server accepted on this connection."""
        return self._pipeline.core.messages_sent

    @property
    def settled(self) -> bool:
        """True when no transaction is queued or in flight on this connection."""
        return self._pipeline.settled

    def shutdown(self) -> None:
        """End the connection at once, also for a thread blocked reading or writing it."""
        channel = self._channel
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.sock.shutdown(socket.SHUT_RDWR)

    def run(self, attempt: Attempt) -> Transaction:
        """Send a prepared transaction; raises if the sender or every recipient is refused.

        `attempt.data_started` tells afterwards whether message bytes went out
        (a lost connection after that may still have delivered the message).
        """
        self.last_used = time.monotonic()
        result = self._pipeline.run(attempt)
        self.last_used = time.monotonic()
        return result

    def send(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        envelope_id: str | None = None,
    ) -> Transaction:
        """Run one mail transaction; raises if the sender or every recipient is refused.

        With `envelope_id`, bounces are requested when the server offers DSN (RFC 3461).
        """
        return self.run(
            self.prepare(sender, recipients, data, smtputf8=smtputf8, envelope_id=envelope_id)
        )

    def quit(self) -> None:
        """Say QUIT politely, end TLS with close_notify and close; never raises."""
        channel = self._channel
        if channel is not None:
            timeout = min(5.0, self.settings.command_timeout)
            try:
                self.write_bytes(b"QUIT\r\n", timeout=timeout)
                self.read_reply("the reply to QUIT", timeout=timeout)
            except DeliveryError:
                pass
            else:
                channel.end_tls(min(1.0, timeout))
        self.close()

    def close(self) -> None:
        """Close the socket without QUIT; never raises."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._pipeline.close()
