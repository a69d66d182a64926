"""One SMTP client connection over asyncio: the async I/O layer over the sans-I/O core.

The bytes go through an `asyncio.Protocol` that feeds the core's `ReplyReader`
directly (no second buffer: a `StreamReader` would keep plaintext injected
after STARTTLS's 220 across the handshake). STARTTLS and implicit TLS use
`loop.start_tls`, which stops reading the plaintext stream before it returns
control, so nothing sent before the handshake is read after it. Every wait is
bounded with `asyncio.timeout`; no thread is held.

Transactions of several tasks share one connection (see `AsyncPipeline` in
`_async_pipeline.py`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
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
from ._async_pipeline import AsyncPipeline
from ._core import (
    Attempt,
    Exchange,
    ReplyReader,
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
    advance,
    opening,
)
from .wire import _lost as lost
from .wire import ack_at_once, timed_out

__all__ = ["AsyncSmtpConnection"]

log = logging.getLogger("mailbridge.smtp")

T = TypeVar("T")

READ_AHEAD_LIMIT = 256 * 1024  # bytes received and not parsed before reading pauses


class _Protocol(asyncio.Protocol):
    """Feeds received bytes to the reader and wakes whoever waits for them."""

    def __init__(self, reader: ReplyReader) -> None:
        self.reader = reader
        self.transport: asyncio.Transport | None = None
        self.ended: str | None = None  # why no more bytes will come
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.paused = False
        self.reading_paused = False
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # The TCP socket, kept across STARTTLS (whose transport has none of its own).
        self.sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        if self.reader.buffered > READ_AHEAD_LIMIT and self.transport is not None:
            # Nobody parses them now (an idle connection, a flooding server): read no more
            # until someone waits for a reply, so the buffer stays bounded.
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.ended = self.ended or "end of stream"
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ended is None:
            self.ended = (exc.strerror if isinstance(exc, OSError) else None) or (
                f"TLS: {exc}" if isinstance(exc, ssl.SSLError) else "connection closed"
            )
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def more_data(self) -> None:
        """Wait until bytes arrive or the connection ends (the caller bounds the time)."""
        if self.ended is not None:
            raise lost(self.ended)
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        ack_at_once(self.sock)  # as the sync client does before every read
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    async def writable(self) -> None:
        """Wait until the transport's write buffer drained below its high-water mark."""
        if self.paused and self.ended is None:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable


async def _resolve(settings: SmtpSettings) -> list[tuple[Any, ...]]:
    """The server's addresses; an address literal without the executor's thread."""
    try:
        ipaddress.ip_address(settings.host)
    except ValueError:
        async with asyncio.timeout(settings.connect_timeout):
            return await asyncio.get_running_loop().getaddrinfo(
                settings.host, settings.port, type=socket.SOCK_STREAM
            )
    return socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )


class AsyncSmtpConnection(SessionState):
    """A connected, greeted, secured and (with credentials) authenticated session, for asyncio.

    Use `await AsyncSmtpConnection.open(settings)`. `run(attempt)` sends one
    transaction; several tasks may run theirs at once on a PIPELINING
    connection, pipelined one after another, each getting its own result.
    """

    def __init__(self, settings: SmtpSettings, observer: Callable[[Step], None] | None = None):
        super().__init__(settings, observer)
        self._protocol = _Protocol(self.reader)
        self.encrypted = False
        self.pipeline = AsyncPipeline(self)

    @classmethod
    async def open(
        cls,
        settings: SmtpSettings,
        observer: Callable[[Step], None] | None = None,
        greeting_timeout: float | None = None,
    ) -> AsyncSmtpConnection:
        """Connect, secure and log in as `settings` say; raises a `DeliveryError` on failure."""
        connection = cls(settings, observer)
        try:
            await connection._open(greeting_timeout or settings.command_timeout)
        except AuthenticationError:
            await connection.quit()  # the session is in step: end it politely
            raise
        except BaseException:
            connection.close()
            raise
        return connection

    # -- opening ---------------------------------------------------------------

    async def _open(self, greeting_timeout: float) -> None:
        sequence = opening(self, greeting_timeout, self._observer)
        request: Request | None = next(sequence)
        while request is not None:
            try:
                result = await self._perform(request)
            except BaseException as exc:
                request = advance(sequence, error=exc)
            else:
                request = advance(sequence, result)

    async def _perform(self, request: Request) -> Any:
        """The I/O of one step of the opening sequence (`_opening.py`)."""
        if isinstance(request, RunExchange):
            return await self.run_exchange(request.exchange)
        if isinstance(request, ReadGreeting):
            return await self.read_reply("the greeting", request.timeout)
        if isinstance(request, SocketName):
            return self._require_transport().get_extra_info("sockname")
        if isinstance(request, StartTls):
            return await self._start_tls()
        if isinstance(request, Connect):
            return await self._connect(request.infos)
        if isinstance(request, FetchToken):
            assert self.settings.oauth2_token is not None
            # A refresh is blocking HTTP (msal, google-auth): never on the event loop.
            return await asyncio.to_thread(
                fetch_token, self.settings.oauth2_token, refused=request.refused
            )
        return await _resolve(self.settings)

    async def _connect(self, infos: Sequence[tuple[Any, ...]]) -> None:
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for family, kind, proto, _, address in infos[:MAX_ADDRESSES_TRIED]:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self.settings.connect_timeout):
                    await loop.sock_connect(sock, address)
            except OSError as exc:  # TimeoutError included
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            await loop.create_connection(lambda: self._protocol, sock=sock)
            return
        assert error is not None
        raise diagnostics.connect_failed(error, self.settings) from None

    async def _start_tls(self) -> str:
        """TLS over the open connection (implicit TLS, or after STARTTLS's 220)."""
        transport = self._require_transport()
        context = self.settings.create_ssl_context()
        loop = asyncio.get_running_loop()
        timeout = self.settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    transport,
                    self._protocol,
                    context,
                    server_hostname=self.settings.host,
                    ssl_handshake_timeout=timeout,
                )
        except (OSError, ConnectionError) as exc:  # ssl.SSLError and TimeoutError included
            raise diagnostics.tls_failed(exc, self.settings) from None
        if tls is None:  # the connection ended during the handshake
            raise diagnostics.tls_failed(ConnectionResetError("closed"), self.settings)
        self._protocol.transport = tls
        self.encrypted = True
        cipher = tls.get_extra_info("cipher") or ("?",)
        return f"{tls.get_extra_info('ssl_object').version()} {cipher[0]}"

    # -- talking ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True until the connection is closed or lost."""
        protocol = self._protocol
        return protocol.transport is not None and protocol.ended is None

    @property
    def messages_sent(self) -> int:
        """How many messages the server accepted on this connection."""
        return self.pipeline.queue.messages_sent

    @property
    def settled(self) -> bool:
        """True when no transaction is queued or in flight on this connection."""
        return self.pipeline.queue.settled

    @property
    def protocol(self) -> _Protocol:
        """The protocol object that receives the bytes (for the pipeline)."""
        return self._protocol

    def _require_transport(self) -> asyncio.Transport:
        transport = self._protocol.transport
        if transport is None or self._protocol.ended is not None:
            raise ConnectError(
                "the connection is closed",
                diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was closed."),
                temporary=True,
            )
        return transport

    def write(self, data: bytes) -> None:
        """Queue bytes for sending (asyncio writes in the background; see `drain`)."""
        self._require_transport().write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until the write buffer has room; a stalled server is a time-out."""
        if self._protocol.paused:
            try:
                async with asyncio.timeout(timeout):
                    await self._protocol.writable()
            except TimeoutError:
                raise timed_out("the server to accept data", timeout) from None

    async def receive(self, what: str, timeout: float, deadline: float) -> None:
        """Wait for more bytes until `deadline` (loop time); raises on a time-out or loss."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._protocol.more_data()
        except TimeoutError:
            raise timed_out(what, timeout) from None

    async def read_reply(self, what: str, timeout: float | None = None) -> SmtpReply:
        """Read the next reply; a lost connection or a 421 closes this connection."""
        timeout = timeout or self.settings.command_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        reader = self.reader
        try:
            while (reply := reader.next_reply()) is None:
                await self.receive(what, timeout, deadline)
        except DeliveryError:
            self.close()
            raise
        log.debug("S: %s", reply)
        if reply.closes_connection:
            self.close()
        return reply

    async def run_exchange(self, exchange: Exchange[T], timeout: float | None = None) -> T:
        """Run one of the core's exchanges: write each command, send it the reply."""
        try:
            command = next(exchange)
            while True:
                log.debug("C: %s", command.shown)
                self.write(command.data)
                command = exchange.send(await self.read_reply(command.what, timeout))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def noop(self) -> SmtpReply:
        """NOOP: checks that the session is still alive."""
        return await self.run_exchange(command_exchange("NOOP"))

    async def run(self, attempt: Attempt) -> Transaction:
        """Send a prepared transaction; raises if the sender or every recipient is refused.

        Cancelled before its bytes went out, it is withdrawn (or, with its
        envelope on the wire, the connection ends before the message can
        follow); cancelled after, the `CancelledError` carries a
        `DeliveryOutcomeUnknown` as its `__cause__`.
        """
        self.last_used = time.monotonic()
        try:
            return await self.pipeline.run(attempt)
        finally:
            self.last_used = time.monotonic()

    async def send(
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
        return await self.run(
            self.prepare(sender, recipients, data, smtputf8=smtputf8, envelope_id=envelope_id)
        )

    async def quit(self) -> None:
        """Say QUIT politely, end TLS with close_notify and close; never raises."""
        if self.is_open and self.settled:
            try:
                timeout = min(5.0, self.settings.command_timeout)
                await self.run_exchange(command_exchange("QUIT"), timeout)
            except DeliveryError:
                pass
            transport = self._protocol.transport
            if transport is not None:
                transport.close()  # flushes, then TLS close_notify
                self._protocol.transport = None
        self.close()

    def close(self) -> None:
        """Close at once without QUIT; transactions left are settled by how far they got."""
        transport = self._protocol.transport
        self._protocol.transport = None
        self._protocol.ended = self._protocol.ended or "closed by the client"
        if transport is not None:
            transport.abort()
        self.pipeline.connection_closed(lost("closed by the client"))
