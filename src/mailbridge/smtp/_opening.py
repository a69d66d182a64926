"""The opening of an SMTP session, written once for the sync and asyncio connections.

`opening(session, greeting_timeout)` is a generator: it yields the I/O it
needs (`Resolve`, `Connect`, `StartTls`, `ReadGreeting`, `RunExchange`,
`SocketName`, `FetchToken`), the connection performs each and sends the result back (or
throws the failure in), and the sequence — greeting, EHLO, STARTTLS, EHLO
again, AUTH (a refused OAuth token is renewed and AUTH retried once) — its
diagnoses and the steps timed for the observer live here.
`drive_opening` runs it for the sync connection; the asyncio connection
drives it the same way with `await`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .. import diagnostics
from .._pinning import resolved, where
from .._results import Step, timed_step
from ..diagnosis import Category, Diagnosis
from ..errors import AuthenticationError, ConnectError, OAuthError
from ..oauth._provider import renewable
from ..reply import SmtpReply
from ..settings import Security, SmtpSettings

if TYPE_CHECKING:
    from ..composer import PreparedMessage

from ._core import (
    Attempt,
    Exchange,
    ReplyReader,
    ehlo_exchange,
    judge_greeting,
    login_exchange,
    plan_attempt,
    starttls_exchange,
)

__all__ = [
    "Connect",
    "FetchToken",
    "Opening",
    "ReadGreeting",
    "Request",
    "Resolve",
    "RunExchange",
    "SessionState",
    "SocketName",
    "StartTls",
    "address_literal",
    "advance",
    "drive_opening",
    "opening",
]

MAX_ADDRESSES_TRIED = 4


@dataclass(frozen=True, slots=True)
class Resolve:
    """Look up the server's addresses: send back `getaddrinfo`'s list."""


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect to the first of `infos` that answers: send back None."""

    infos: Sequence[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class StartTls:
    """Start TLS over the open connection: send back the version and cipher."""


@dataclass(frozen=True, slots=True)
class ReadGreeting:
    """Read the greeting within `timeout`: send back the reply."""

    timeout: float


@dataclass(frozen=True, slots=True)
class RunExchange:
    """Run one of the core's exchanges: send back its result."""

    exchange: Exchange[Any]


@dataclass(frozen=True, slots=True)
class SocketName:
    """Send back the local socket address (`getsockname()`), or None."""


@dataclass(frozen=True, slots=True)
class FetchToken:
    """Send back an access token from `settings.oauth2_token` (`oauth._provider.fetch_token`);
    `refused` is the one the server just refused. It may do HTTP: run it off the event loop."""

    refused: str | None = field(default=None, repr=False)


Request = Resolve | Connect | StartTls | ReadGreeting | RunExchange | SocketName | FetchToken
Opening = Generator[Request, Any, None]


class Session(Protocol):
    """What the opening reads and sets on a connection."""

    settings: SmtpSettings
    reader: ReplyReader
    extensions: dict[str, str]
    greeting: SmtpReply | None
    authenticated: bool

    @property
    def encrypted(self) -> bool: ...


class SessionState:
    """What both connections hold of a session, and decide alike from it (no I/O)."""

    def __init__(self, settings: SmtpSettings, observer: Callable[[Step], None] | None) -> None:
        self.settings = settings
        self._observer = observer
        self.reader = ReplyReader()  # the receive buffer, kept across STARTTLS
        self.extensions: dict[str, str] = {}
        self.greeting: SmtpReply | None = None
        self.authenticated = False
        self.opened_at = self.last_used = time.monotonic()

    @property
    def pipelining(self) -> bool:
        """True when the server accepts commands ahead of replies (RFC 2920)."""
        return "PIPELINING" in self.extensions

    def prepare(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        envelope_id: str | None = None,
    ) -> Attempt:
        """Check and build one transaction without writing anything (see `run`).

        Raises `MessageError`, or `UnsupportedByServer`/`MessageRejected` when the
        message needs an extension the server lacks or exceeds its SIZE.
        """
        return plan_attempt(
            self.extensions,
            sender,
            recipients,
            data,
            smtputf8=smtputf8,
            chunking=self.settings.chunking,
            envelope_id=envelope_id,
        )

    def prepare_message(self, message: PreparedMessage) -> Attempt:
        """`prepare` for a composed message: its envelope, recipients, bytes and envelope id."""
        return self.prepare(
            message.envelope_sender,
            message.recipients,
            message.data,
            smtputf8=message.smtputf8,
            envelope_id=message.envelope_id,
        )


def address_literal(sockname: Any) -> str:
    """EHLO's name without `local_hostname`: the local address as a literal."""
    try:
        address = ipaddress.ip_address(sockname[0])
    except (TypeError, IndexError, ValueError):
        return "[127.0.0.1]"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


def opening(
    session: Session,
    greeting_timeout: float,
    observer: Callable[[Step], None] | None = None,
) -> Opening:
    """Connect, secure, greet and log in as `session.settings` say (see the module)."""
    settings = session.settings
    with timed_step(observer, "resolve") as note:
        try:
            infos = yield Resolve()
        except UnicodeError:  # an IDN label the IDNA codec refuses (e.g. over 63 octets)
            raise diagnostics.connect_failed(
                socket.gaierror(socket.EAI_NONAME, "invalid name"), settings
            ) from None
        except OSError as exc:  # TimeoutError included
            raise diagnostics.connect_failed(exc, settings) from None
        note[0] = resolved(settings, ", ".join(sorted({str(info[4][0]) for info in infos})))
    with timed_step(observer, "connect", where(settings)):
        yield Connect(infos)
    if settings.security == Security.IMPLICIT_TLS:
        with timed_step(observer, "tls") as note:
            note[0] = yield StartTls()
    with timed_step(observer, "greeting") as note:
        session.greeting = yield from _greeting(settings, greeting_timeout)
        note[0] = str(session.greeting)
    with timed_step(observer, "ehlo") as note:
        yield from _ehlo(session)
        note[0] = " ".join(sorted(session.extensions))
    if settings.security == Security.STARTTLS:
        with timed_step(observer, "starttls") as note:
            yield RunExchange(starttls_exchange(session.extensions, settings, session.reader))
            session.extensions = {}
            note[0] = yield StartTls()
        with timed_step(observer, "ehlo") as note:
            yield from _ehlo(session)
            note[0] = " ".join(sorted(session.extensions))
    if settings.has_credentials:
        with timed_step(observer, "auth") as note:
            note[0] = yield from _login(session)
            session.authenticated = True


def _login(session: Session) -> Generator[Request, Any, str]:
    settings = session.settings
    source = settings.oauth2_token
    token = None
    if source is not None:
        # A dry run up to the first AUTH line: no AUTH offered, no OAuth mechanism, no TLS
        # raise their diagnosed error here, before a token is fetched (a refresh, maybe).
        dry_run = login_exchange(
            session.extensions, settings, encrypted=session.encrypted, token=""
        )
        try:
            next(dry_run)
        finally:
            dry_run.close()
        token = yield FetchToken()
    try:
        result: str = yield RunExchange(
            login_exchange(session.extensions, settings, encrypted=session.encrypted, token=token)
        )
    except AuthenticationError as exc:
        if not (renewable(source) and refused_token(exc)):
            raise
        # The token was refused (expired early, revoked): one new token, one more AUTH.
        renewed = yield FetchToken(refused=token)
        if renewed == token:  # the provider keeps it (fresh, and refused already): no retry
            raise exc
        result = yield RunExchange(
            login_exchange(session.extensions, settings, encrypted=session.encrypted, token=renewed)
        )
    return result


# 535 refusals about the account or the server's policy, not the token: a new token is
# refused the same way, so renewing would only spend a refresh (Microsoft 5.7.139: SMTP
# AUTH disabled, security defaults; Gmail 5.7.9/5.7.14: a password login, web sign-in).
_NOT_THE_TOKEN = frozenset({"5.7.139", "5.7.30", "5.7.9", "5.7.14", "5.7.0", "5.7.11"})


def refused_token(exc: AuthenticationError) -> bool:
    """True when the server refused the presented OAuth token itself: RFC 4954's 535
    (Gmail 5.7.8, Microsoft 5.7.3), not a 530/534/538/550 or a policy 535 (5.7.139)."""
    reply = exc.reply
    if isinstance(exc, OAuthError) or reply is None or reply.code != 535:
        return False
    return (reply.enhanced_status or "") not in _NOT_THE_TOKEN


def _greeting(settings: SmtpSettings, timeout: float) -> Generator[Request, Any, SmtpReply]:
    try:
        reply = yield ReadGreeting(timeout)
    except ConnectError as exc:
        if exc.diagnosis.category == Category.TIMEOUT and settings.security != (
            Security.IMPLICIT_TLS
        ):
            exc.diagnosis = Diagnosis(
                Category.TIMEOUT,
                "The server did not greet; it may expect TLS immediately.",
                (
                    *diagnostics.port_hints(settings),
                    "If this port is for SSL/TLS (usually 465), choose SSL/TLS.",
                ),
            )
        raise
    return judge_greeting(reply)


def _ehlo(session: Session) -> Generator[Request, Any, None]:
    name = session.settings.local_hostname or address_literal((yield SocketName()))
    session.extensions = yield RunExchange(ehlo_exchange(name))


def advance(
    sequence: Opening, result: Any = None, error: BaseException | None = None
) -> Request | None:
    """Resume `sequence` with the last request's result (or failure): the next request,
    or None when the session is open."""
    try:
        return sequence.throw(error) if error is not None else sequence.send(result)
    except StopIteration:
        return None


def drive_opening(sequence: Opening, perform: Callable[[Request], Any]) -> None:
    """Run `sequence` to its end, `perform` doing each request's I/O (sync)."""
    request: Request | None = next(sequence)
    while request is not None:
        try:
            result = perform(request)
        except BaseException as exc:
            request = advance(sequence, error=exc)
        else:
            request = advance(sequence, result)
