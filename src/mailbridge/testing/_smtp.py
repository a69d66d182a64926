"""`FakeSmtpServer`: a real SMTP server (aiosmtpd) on loopback, with faults on demand."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import hmac
import secrets
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import attrs
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ..settings import SmtpSettings
from ._loop import STOP_TIMEOUT
from ._sasl import TokenIssuer, bearer_host, bearer_login, oauth_error_challenge, token_valid
from ._tls_server import TlsMode, TlsServer

__all__ = ["FakeSmtpServer", "ReceivedMessage"]

LONGEST_LINE = 1 << 20  # octets in one command or message line the fake accepts


@attrs.frozen
class ReceivedMessage:
    """One transaction as the server saw it: envelope, exact bytes, TLS and login."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")
    tls: bool
    user: str | None
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[str, ...] = ()  # DSN's NOTIFY= and ORCPT=, when `dsn` is on

    @property
    def message(self) -> EmailMessage:
        """The received bytes parsed as an email message."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Session(Session):
    """aiosmtpd's Session without the deprecated `login_data` property, which logs a
    warning each time aiosmtpd itself sets it after a login (`auth_data` replaces it)."""

    login_data: Any = None


class _Smtp(SMTP):
    """aiosmtpd's SMTP as real servers behave: implicit-TLS connections count as encrypted,
    BDAT (RFC 3030), the usual LOGIN prompts, long lines accepted, QUITs counted."""

    # "Username:" and "Password:", as Postfix, Exim and Microsoft 365 prompt (not aiosmtpd's).
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"
    # Real servers take lines far over RFC 5321's 1000 octets (Postfix, Exim do).
    line_length_limit = LONGEST_LINE

    _chunks: list[bytes] | None = None
    fake: FakeSmtpServer

    def _create_session(self) -> Session:
        return _Session(self.loop)

    async def smtp_QUIT(self, arg: str) -> None:
        with self.fake._lock:
            self.fake.quits += 1
        await super().smtp_QUIT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if self._chunks is not None:  # RFC 3030: no DATA within a BDAT transaction
            await self.push("503 5.5.1 Error: DATA not allowed after BDAT")
            return
        await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self._chunks = None
        await super().smtp_RSET(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        self._chunks = None
        arg, dsn = self._dsn_parameters(arg, ("RET=", "ENVID="))
        await super().smtp_MAIL(arg)
        if dsn and self.envelope is not None and self.envelope.mail_from:
            self.envelope.mail_options.extend(dsn)

    async def smtp_RCPT(self, arg: str) -> None:
        arg, dsn = self._dsn_parameters(arg, ("NOTIFY=", "ORCPT="))
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        if dsn and self.envelope is not None and len(self.envelope.rcpt_tos) > before:
            self.envelope.rcpt_options.extend(dsn)

    def _dsn_parameters(self, arg: str, keys: tuple[str, ...]) -> tuple[str, list[str]]:
        """RFC 3461 parameters taken out of `arg` (aiosmtpd refuses them) when `dsn` is on."""
        if not self.fake.dsn or not arg:
            return arg, []
        words = arg.split(" ")
        dsn = [word for word in words if word.upper().startswith(keys)]
        return " ".join(word for word in words if word not in dsn), dsn

    async def smtp_BDAT(self, arg: str) -> None:
        """RFC 3030 CHUNKING: the chunk is read (and discarded on error) in every case."""
        words = arg.split()
        if (
            not words
            or not words[0].isdigit()
            or len(words) > 2
            or (len(words) == 2 and words[1].upper() != "LAST")
        ):
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            return
        size, last = int(words[0]), len(words) == 2
        chunk = await self._reader.readexactly(size)
        envelope = self.envelope
        if envelope is None or not envelope.mail_from:
            self._chunks = None
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        if not envelope.rcpt_tos:
            self._chunks = None
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        self._chunks = [*(self._chunks or []), chunk]
        if self.data_size_limit and sum(map(len, self._chunks)) > self.data_size_limit:
            self._chunks = None
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("552 5.3.4 Error: Too much mail data")
            return
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        envelope.original_content = envelope.content = b"".join(self._chunks)
        self._chunks = None
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if not isinstance(status, str) else status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        session = self.session
        if transport.get_extra_info("sslcontext") is not None and session and session.ssl is None:
            session.ssl = {"implicit_tls": True}
            # A truthy _tls_protocol lets AUTH through, as after STARTTLS.
            self._tls_protocol = transport  # type: ignore[assignment]


class _Handler:
    """The aiosmtpd handler: records transactions and injects the configured faults."""

    def __init__(self, server: FakeSmtpServer) -> None:
        self.server = server
        # Messages accepted per connection (for `messages_per_connection`).
        self.accepted: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        extra = ["250-PIPELINING"] if self.server.pipelining else []
        if self.server.chunking:
            extra.append("250-CHUNKING")
        if self.server.dsn:
            extra.append("250-DSN")
        if self.server.omit_starttls:
            responses = [line for line in responses if "STARTTLS" not in line]
        logins = self.server.users or self.server.tokens or self.server.auth_required
        responses = [  # no AUTH without accounts, nor an empty "250-AUTH"
            line
            for line in responses
            if not line.startswith("250-AUTH") or (logins and line.strip() != "250-AUTH")
        ]
        return [responses[0], *extra, *responses[1:]]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        fake = self.server
        if fake.stall_seconds:
            await asyncio.sleep(fake.stall_seconds)
        limit = fake.messages_per_connection
        over_limit = limit is not None and self.accepted.get(session, 0) >= limit
        closing = fake.close_after is not None and fake.delivered_count >= fake.close_after
        if over_limit or closing:
            transport = server.transport
            if transport is not None:
                asyncio.get_running_loop().call_soon(transport.close)  # as Exim does
            return "421 4.7.0 Too many messages on this connection, closing"
        if fake.sender_reply is not None:
            return fake.sender_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.server.refused_recipients.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fake = self.server
        if fake.drop_before_data_reply:
            if server.transport is not None:
                server.transport.close()
            return "421 4.4.2 (connection dropped by fault injection)"
        if fake.data_reply is not None:
            return fake.data_reply
        login = getattr(session.auth_data, "login", None)
        self.accepted[session] = self.accepted.get(session, 0) + 1
        with fake._lock:
            fake.messages.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=envelope.original_content or b"",
                    tls=session.ssl is not None,
                    user=login.decode() if isinstance(login, bytes) else login,
                    mail_options=tuple(envelope.mail_options),
                    rcpt_options=tuple(envelope.rcpt_options),
                )
            )
        return "250 2.0.0 OK: queued"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Bad base64")
        else:
            answer = await server.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        user, token = bearer_login(mechanism, blob)
        fake = self.server
        with fake._lock:
            fake.oauth_hosts.append(bearer_host(mechanism, blob))
        if fake.login_reply is None and token_valid(
            user, token, fake.tokens, fake.authorization_server
        ):
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        with fake._lock:
            fake.oauth_refused += 1
        error = oauth_error_challenge(mechanism, "https://mail.example/")
        # The client ends the exchange: XOAUTH2 an empty line, OAUTHBEARER %x01 (RFC 7628).
        ending = await server.challenge_auth(error)
        if not isinstance(ending, bytes):
            return AuthResult(success=False, handled=True)  # "*": aiosmtpd already said 501
        with fake._lock:
            fake.oauth_endings.append(ending)
        return AuthResult(
            success=False,
            handled=False,
            message=fake.login_reply or "535 5.7.8 Username and Password not accepted",
        )

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        challenge = f"<{secrets.token_hex(8)}@fake.smtp.test>".encode()
        answer = await server.challenge_auth(challenge)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        user, _, digest = answer.decode("utf-8", "replace").partition(" ")
        password = self.server.users.get(user)
        if self.server.login_reply is None and password is not None:
            expected = hmac.new(password.encode(), challenge, "md5").hexdigest()
            if hmac.compare_digest(expected.encode(), digest.encode()):
                return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        return AuthResult(success=False, handled=False, message=self.server.login_reply)


class FakeSmtpServer(TlsServer):
    """An SMTP server on a free loopback port, run in a background thread.

    `tls` is "starttls" (default), "implicit" or "none"; certificates come from
    a throw-away CA (`ca_file`, `client_ssl_context()`). With `users` (and/or
    `tokens` for XOAUTH2/OAUTHBEARER, or `authorization_server`, a
    `FakeAuthorizationServer` whose unexpired tokens are accepted) logins are
    required; `oauth_refused` counts refused tokens, `oauth_endings` keeps the client's
    (decoded) answers to the error challenge, `oauth_hosts` the `host=` of each
    OAUTHBEARER login (None for XOAUTH2). Every accepted message is in
    `messages`. Faults are attributes you may set at any time:
    `refuse_recipient()`, `login_reply`, `sender_reply`, `data_reply`,
    `close_after`, `messages_per_connection` (421 to MAIL and close once a
    connection has carried that many, as Exim's `smtp_accept_max_per_connection`),
    `stall_seconds`, `drop_before_data_reply`, `omit_starttls`. `quits` counts
    the QUIT commands received.
    `auth_mechanisms` limits the AUTH mechanisms offered (default: PLAIN,
    LOGIN, CRAM-MD5, XOAUTH2 and OAUTHBEARER); `chunking=True` also offers BDAT (RFC 3030);
    `dsn=True` offers DSN (RFC 3461) and accepts its MAIL and RCPT parameters.
    """

    _name = "FakeSmtpServer"

    def __init__(
        self,
        *,
        tls: TlsMode = "starttls",
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        authorization_server: TokenIssuer | None = None,
        auth_required: bool | None = None,
        pipelining: bool = True,
        chunking: bool = False,
        dsn: bool = False,
        smtputf8: bool = True,
        omit_starttls: bool = False,
        certificate_hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
        auth_mechanisms: Sequence[str] | None = None,
        data_size_limit: int = 33_554_432,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(tls=tls, host=host, certificate_hostnames=certificate_hostnames)
        self.users = dict(users or {})
        self.tokens = dict(tokens or {})
        self.authorization_server = authorization_server
        self.oauth_refused = 0
        self.oauth_endings: list[bytes] = []  # decoded answers to the error challenge
        self.oauth_hosts: list[str | None] = []  # OAUTHBEARER's host= field (None: XOAUTH2)
        self.auth_required = (
            bool(self.users or self.tokens or authorization_server)
            if auth_required is None
            else auth_required
        )
        self.pipelining = pipelining
        self.chunking = chunking
        self.dsn = dsn
        self.smtputf8 = smtputf8
        self.omit_starttls = omit_starttls
        self.data_size_limit = data_size_limit
        self.auth_mechanisms = (
            None if auth_mechanisms is None else {m.upper() for m in auth_mechanisms}
        )
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        # Faults: set them before or while a test runs.
        self.refused_recipients: dict[str, str] = {}
        self.login_reply: str | None = None
        self.sender_reply: str | None = None
        self.data_reply: str | None = None
        self.close_after: int | None = None
        self.messages_per_connection: int | None = None
        self.quits = 0
        self.stall_seconds: float = 0.0
        self.drop_before_data_reply = False

        self._lock = threading.Lock()
        self._protocols: list[SMTP] = []
        self._handler = _Handler(self)

    # -- configuration helpers ---------------------------------------------------

    @property
    def delivered_count(self) -> int:
        """How many messages were accepted so far."""
        return len(self.messages)

    def smtp_settings(
        self, username: str | None = None, password: str | None = None, **changes: Any
    ) -> SmtpSettings:
        """`SmtpSettings` for this server; a user or password not given is the only user's
        (so `password="wrong"` logs in as that user with a wrong password)."""
        if len(self.users) == 1:
            only_user, only_password = next(iter(self.users.items()))
            if username is None:
                username = only_user
            if password is None and username == only_user:
                password = only_password
        elif username is not None and password is None:
            password = self.users.get(username)
        if changes.get("oauth2_token") is not None:
            password = None
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "username": username,
            "password": password,
            "ca_file": self.ca_file,
            "connect_timeout": 5.0,
            "command_timeout": 5.0,
            "data_timeout": 10.0,
        }
        values.update(changes)
        if values.get("ssl_context") is not None:
            values["ca_file"] = None
        return SmtpSettings(**values)

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 No such user here") -> None:
        """Answer RCPT TO for `address` with `reply` (a 4xx makes it temporary)."""
        self.refused_recipients[address.lower()] = reply

    def drop_connections(self) -> None:
        """Close every open client connection from the server side (an idle time-out)."""
        if self._loop is None:
            return

        async def drop() -> None:
            for protocol in self._protocols:
                if protocol.transport is not None:
                    protocol.transport.close()

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(STOP_TIMEOUT)

    # -- running -------------------------------------------------------------------

    def _factory(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS, which tls="none" tests on purpose.
            warnings.simplefilter("ignore")
            protocol = self._make_protocol()
        with self._lock:
            self.connections += 1
            self._protocols.append(protocol)
        return protocol

    def _make_protocol(self) -> SMTP:
        protocol = _Smtp(
            self._handler,
            hostname="fake.smtp.test",
            ident="mailbridge FakeSmtpServer",
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=self.smtputf8,
            decode_data=False,
            tls_context=self._server_context
            if self.tls == "starttls" and not self.omit_starttls
            else None,
            require_starttls=False,
            auth_required=self.auth_required,
            auth_require_tls=self.tls != "none",
            authenticator=self._authenticate,
            timeout=30,
            auth_exclude_mechanism=[
                mechanism
                for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")
                if self.auth_mechanisms is not None and mechanism not in self.auth_mechanisms
            ],
        )
        protocol.fake = self
        return protocol

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.login_reply is not None:
            return AuthResult(success=False, handled=False, message=self.login_reply)
        if isinstance(data, LoginPassword):
            expected = self.users.get(data.login.decode("utf-8", "replace"))
            if expected is not None and hmac.compare_digest(expected.encode(), data.password):
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _close_connections(self) -> None:
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
