"""One SMTP client connection: TLS, EHLO, AUTH and pipelined transactions (RFC 5321, 2920)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from .. import diagnostics
from ..diagnosis import Category, Diagnosis
from ..errors import (
    AuthenticationError,
    ConnectError,
    DeliveryError,
    ProtocolError,
    TlsError,
)
from ..reply import SmtpReply
from ..settings import Security, SmtpSettings
from .auth import authenticate, choose_mechanism
from .pipeline import Pipeline
from .transaction import Attempt, plan_attempt
from .wire import Channel, check_command

__all__ = ["SmtpConnection", "Step", "Transaction"]

log = logging.getLogger("mailbridge.smtp")

MAX_ADDRESSES_TRIED = 4


@attrs.frozen
class Step:
    """One step of opening a connection, with its outcome and duration."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@attrs.frozen
class Transaction:
    """The outcome of one accepted message: who got it, who was refused, the final reply."""

    accepted: tuple[str, ...]
    refused: dict[str, SmtpReply]
    reply: SmtpReply


def _address_literal(sock: socket.socket) -> str:
    try:
        address = ipaddress.ip_address(sock.getsockname()[0])
    except (OSError, ValueError):
        return "[127.0.0.1]"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


class SmtpConnection:
    """A connected, greeted, secured and (when credentials are set) authenticated session.

    Use `SmtpConnection.open(settings)`. `send()` runs one transaction; with
    PIPELINING the whole envelope and DATA go out in one write. Several threads
    may call `send()` at once on a PIPELINING connection: their transactions
    are pipelined one after another (see `pipeline.py`), each thread getting
    its own result.
    """

    def __init__(self, settings: SmtpSettings, observer: Callable[[Step], None] | None = None):
        self.settings = settings
        self._observer = observer
        self._channel: Channel | None = None
        self.extensions: dict[str, str] = {}
        self.greeting: SmtpReply | None = None
        self.authenticated = False
        self.messages_sent = 0
        self.opened_at = self.last_used = time.monotonic()
        self.needs_reset = False  # a failed transaction left state on the server: RSET first
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

    @contextmanager
    def _step(self, name: str, detail: str = "") -> Iterator[list[str]]:
        started = time.perf_counter()
        note = [detail]
        try:
            yield note
        except BaseException as exc:
            if self._observer:
                self._observer(Step(name, False, time.perf_counter() - started, str(exc)))
            raise
        if self._observer:
            self._observer(Step(name, True, time.perf_counter() - started, note[0]))

    def _open(self, greeting_timeout: float) -> None:
        settings = self.settings
        with self._step("resolve") as note:
            try:
                infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
            except UnicodeError:  # an IDN label the IDNA codec refuses (e.g. over 63 octets)
                raise diagnostics.connect_failed(
                    socket.gaierror(socket.EAI_NONAME, "invalid name"), settings
                ) from None
            except OSError as exc:
                raise diagnostics.connect_failed(exc, settings) from None
            note[0] = ", ".join(sorted({str(info[4][0]) for info in infos}))
        with self._step("connect", f"{settings.host}:{settings.port}"):
            sock = self._connect(infos)
        self._channel = Channel(sock)
        if settings.security == Security.IMPLICIT_TLS:
            with self._step("tls") as note:
                note[0] = self._wrap_tls()
        with self._step("greeting") as note:
            self.greeting = self._expect_greeting(greeting_timeout)
            note[0] = str(self.greeting)
        with self._step("ehlo") as note:
            self._ehlo()
            note[0] = " ".join(sorted(self.extensions))
        if settings.security == Security.STARTTLS:
            with self._step("starttls") as note:
                note[0] = self._starttls()
            with self._step("ehlo") as note:
                self._ehlo()
                note[0] = " ".join(sorted(self.extensions))
        if settings.has_credentials:
            with self._step("auth") as note:
                note[0] = self._auth()

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
        self._channel = Channel(tls)
        return f"{tls.version()} {(tls.cipher() or ('?',))[0]}"

    def _expect_greeting(self, timeout: float) -> SmtpReply:
        try:
            reply = self.read_reply("the greeting", timeout)
        except ConnectError as exc:
            if exc.diagnosis.category == Category.TIMEOUT and self.settings.security != (
                Security.IMPLICIT_TLS
            ):
                exc.diagnosis = Diagnosis(
                    Category.TIMEOUT,
                    "The server did not greet; it may expect TLS immediately.",
                    (
                        *diagnostics.port_hints(self.settings),
                        "If this port is for SSL/TLS (usually 465), choose SSL/TLS.",
                    ),
                )
            raise
        if reply.code != 220:
            raise ConnectError(
                "the server refused the session",
                reply=reply,
                diagnosis=Diagnosis(
                    Category.SERVER_UNAVAILABLE,
                    "The server does not accept connections right now.",
                    ("Try again later.",)
                    if reply.is_temporary
                    else ("The server refuses connections from this address.",),
                ),
            )
        return reply

    def _ehlo(self) -> None:
        name = self.settings.local_hostname or _address_literal(self._require_channel().sock)
        reply = self.command(f"EHLO {name}")
        if reply.closes_connection:
            raise ConnectError(
                "the server closed the session after EHLO",
                reply=reply,
                diagnosis=Diagnosis(
                    Category.SERVER_UNAVAILABLE,
                    "The server does not accept connections right now.",
                    ("Try again later.",),
                ),
            )
        if reply.code in (500, 502, 554):  # a very old server: plain HELO, no extensions
            reply = self.command(f"HELO {name}")
            self.extensions = {}
        elif reply.code == 250:
            self.extensions = {}
            for line in reply.text.splitlines()[1:]:
                keyword, _, params = line.strip().partition(" ")
                if keyword.upper().startswith("AUTH="):  # pre-RFC 4954 servers
                    keyword, params = "AUTH", keyword[5:] + " " + params
                if keyword:
                    self.extensions[keyword.upper()] = params.strip()
        if reply.code != 250:
            raise ProtocolError(
                "the server refused EHLO and HELO",
                reply=reply,
                diagnosis=Diagnosis(Category.PROTOCOL, "The server refused to start a session."),
            )

    def _starttls(self) -> str:
        if "STARTTLS" not in self.extensions:
            raise TlsError(
                "the server does not offer STARTTLS; refusing to continue without encryption",
                diagnosis=Diagnosis(
                    Category.STARTTLS_NOT_OFFERED,
                    "The server does not offer an encrypted connection (STARTTLS) on this port.",
                    (
                        *diagnostics.port_hints(self.settings),
                        "Try port 587 with STARTTLS or port 465 with SSL/TLS.",
                        "Something on the network may be removing STARTTLS (a downgrade attack).",
                    ),
                ),
            )
        reply = self.command("STARTTLS")
        if reply.code != 220:
            raise TlsError(
                "the server refused STARTTLS",
                reply=reply,
                diagnosis=Diagnosis(
                    Category.TLS_HANDSHAKE,
                    "The server refused to start encryption.",
                    ("Try again later, or try port 465 with SSL/TLS.",),
                ),
            )
        # Anything that arrived after the 220 was sent before the handshake: it cannot be
        # trusted (STARTTLS command injection, CVE-2011-0411 and kin), so it is dropped.
        dropped = self._require_channel().discard_buffered()
        if dropped:
            log.warning("discarded %d bytes the server sent before the TLS handshake", dropped)
        self.extensions = {}
        return self._wrap_tls()

    def _auth(self) -> str:
        offered = frozenset(self.extensions.get("AUTH", "").upper().split())
        encrypted = self.encrypted
        if "AUTH" not in self.extensions:
            if not encrypted:
                raise AuthenticationError(
                    "the server offers no login on this unencrypted connection",
                    diagnosis=Diagnosis(
                        Category.AUTH_REQUIRES_TLS,
                        "The server only accepts logins over an encrypted connection.",
                        ("Choose STARTTLS (usually port 587) or SSL/TLS (usually port 465).",),
                    ),
                )
            raise AuthenticationError(
                "the server does not offer a login (AUTH) on this port",
                diagnosis=Diagnosis(
                    Category.AUTH_NOT_OFFERED,
                    "The server does not accept logins on this port.",
                    (
                        "Use the submission port (587 with STARTTLS or 465 with SSL/TLS); "
                        "port 25 is for server-to-server mail.",
                        "If the server needs no login (a local relay), leave user name and "
                        "password empty.",
                    ),
                ),
            )
        if not encrypted and not self.settings.allow_plaintext_auth:
            raise AuthenticationError(
                "refusing to send the password over an unencrypted connection",
                diagnosis=Diagnosis(
                    Category.AUTH_REQUIRES_TLS,
                    "The password would travel unencrypted, so it was not sent.",
                    (
                        "Choose STARTTLS or SSL/TLS.",
                        "Only for a trusted local relay: set allow_plaintext_auth=True.",
                    ),
                ),
            )
        mechanism = choose_mechanism(self.settings, offered, encrypted)

        def on_failure(reply: SmtpReply, used: str) -> AuthenticationError:
            return diagnostics.auth_failed(reply, self.settings, used)

        authenticate(self._exchange, self.settings, mechanism, on_failure)
        self.authenticated = True
        return f"{mechanism} as {self.settings.username}"

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

    def _exchange(self, line: str, secret: bool) -> SmtpReply:
        shown = line
        if secret:  # keep the command and mechanism, hide every credential
            words = line.split(" ")
            shown = " ".join([*words[:2], "********"]) if words[0] == "AUTH" else "********"
        log.debug("C: %s", shown)
        self.write_bytes(check_command(line))
        return self.read_reply("the reply to AUTH")

    def command(self, line: str) -> SmtpReply:
        """Send one command and return its reply."""
        log.debug("C: %s", line)
        self.write_bytes(check_command(line))
        return self.read_reply(f"the reply to {line.split(' ', maxsplit=1)[0]}")

    def noop(self) -> SmtpReply:
        """NOOP: checks that the session is still alive."""
        return self.command("NOOP")

    @property
    def pipelining(self) -> bool:
        """True when the server accepts commands ahead of replies (RFC 2920)."""
        return "PIPELINING" in self.extensions

    @property
    def channel(self) -> Channel:
        """The open channel; raises `ConnectError` when the connection is closed."""
        return self._require_channel()

    def check_in_step(self, *, quiet: bool) -> None:
        """Raise `ConnectError` when the connection is closed, or (`quiet`) when the
        server sent replies nobody asked for (the session is out of step: closed)."""
        channel = self._require_channel()
        if quiet and channel.has_unread_data:
            self.close()
            raise ConnectError(
                "the server sent unexpected data between transactions",
                diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was out of step."),
                temporary=True,
            )

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

    def prepare(
        self, sender: str, recipients: Sequence[str], data: bytes, *, smtputf8: bool = False
    ) -> Attempt:
        """Check and build one transaction without writing anything (see `run`).

        Raises `MessageError`, or `UnsupportedByServer`/`MessageRejected` when the
        message needs an extension the server lacks or exceeds its SIZE.
        """
        return plan_attempt(self, sender, recipients, data, smtputf8)

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
    ) -> Transaction:
        """Run one mail transaction; raises if the sender or every recipient is refused."""
        return self.run(self.prepare(sender, recipients, data, smtputf8=smtputf8))

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
