"""Opening a session, sans I/O: greeting, EHLO/HELO, STARTTLS and AUTH as exchanges.

Each exchange is a generator: it yields a `Command` (bytes to write, and what
the reply answers), is sent the server's reply, and returns its result (or
raises the typed, diagnosed error). An I/O layer runs one with a loop of
write, read reply, `send(reply)`; see `run_exchange` in the sync layer and
docs/design.md. When `starttls_exchange` returns, the I/O layer starts TLS.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import TypeVar

import attrs

from ... import diagnostics
from ...diagnosis import Category, Diagnosis
from ...errors import AuthenticationError, ConnectError, ProtocolError, TlsError
from ...reply import SmtpReply
from ...settings import SmtpSettings
from ._auth import auth_exchange, choose_mechanism, shown_line
from ._framing import check_command
from ._replies import ReplyReader

__all__ = [
    "Command",
    "Exchange",
    "command_exchange",
    "ehlo_exchange",
    "judge_greeting",
    "login_exchange",
    "parse_ehlo",
    "starttls_exchange",
]

log = logging.getLogger("mailbridge.smtp")
T = TypeVar("T")


@attrs.frozen
class Command:
    """One command to write: its bytes, how it may be logged, and what its reply answers."""

    data: bytes
    shown: str
    what: str


# Yields commands, is sent each one's reply, returns its result.
Exchange = Generator[Command, SmtpReply, T]


def command(line: str, shown: str | None = None) -> Command:
    """The `Command` for one line (checked: no line breaks)."""
    verb = line.split(" ", maxsplit=1)[0]
    return Command(check_command(line), line if shown is None else shown, f"the reply to {verb}")


def command_exchange(line: str) -> Exchange[SmtpReply]:
    """Send one command; returns its reply, whatever it is."""
    return (yield command(line))


def judge_greeting(reply: SmtpReply) -> SmtpReply:
    """The greeting must be 220; anything else is a `ConnectError` saying the server refused."""
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


def parse_ehlo(reply: SmtpReply) -> dict[str, str]:
    """The extensions a 250 EHLO reply offers: keyword (upper case) to parameters."""
    extensions: dict[str, str] = {}
    for line in reply.text.splitlines()[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword.upper().startswith("AUTH="):  # pre-RFC 4954 servers
            keyword, params = "AUTH", keyword[5:] + " " + params
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


def ehlo_exchange(name: str) -> Exchange[dict[str, str]]:
    """EHLO (HELO for a very old server); returns the extensions offered."""
    reply = yield command(f"EHLO {name}")
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
    extensions: dict[str, str] = {}
    if reply.code in (500, 502, 554):  # a very old server: plain HELO, no extensions
        reply = yield command(f"HELO {name}")
    elif reply.code == 250:
        extensions = parse_ehlo(reply)
    if reply.code != 250:
        raise ProtocolError(
            "the server refused EHLO and HELO",
            reply=reply,
            diagnosis=Diagnosis(Category.PROTOCOL, "The server refused to start a session."),
        )
    return extensions


def starttls_exchange(
    extensions: dict[str, str], settings: SmtpSettings, reader: ReplyReader
) -> Exchange[None]:
    """STARTTLS; when it returns, start TLS at once (then EHLO again).

    Bytes that arrived after the 220 were sent before the handshake and cannot
    be trusted (STARTTLS command injection, CVE-2011-0411 and kin): they are
    dropped from `reader`, never read as replies.
    """
    if "STARTTLS" not in extensions:
        raise TlsError(
            "the server does not offer STARTTLS; refusing to continue without encryption",
            diagnosis=Diagnosis(
                Category.STARTTLS_NOT_OFFERED,
                "The server does not offer an encrypted connection (STARTTLS) on this port.",
                (
                    *diagnostics.port_hints(settings),
                    "Try port 587 with STARTTLS or port 465 with SSL/TLS.",
                    "Something on the network may be removing STARTTLS (a downgrade attack).",
                ),
            ),
        )
    reply = yield command("STARTTLS")
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
    dropped = reader.discard()
    if dropped:
        log.warning("discarded %d bytes the server sent before the TLS handshake", dropped)


def login_exchange(
    extensions: dict[str, str], settings: SmtpSettings, *, encrypted: bool, token: str | None = None
) -> Exchange[str]:
    """AUTH with the best mechanism offered; returns "MECHANISM as user" or raises.

    With `settings.oauth2_token`, `token` is the access token the I/O layer fetched.
    """
    if "AUTH" not in extensions:
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
    if not encrypted and not settings.allow_plaintext_auth:
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
    offered = frozenset(extensions["AUTH"].upper().split())
    mechanism = choose_mechanism(settings, offered, encrypted)
    steps = auth_exchange(settings, mechanism, token)
    try:
        line, secret = next(steps)
        while True:
            shown = shown_line(line, secret)
            reply = yield Command(check_command(line), shown, "the reply to AUTH")
            line, secret = steps.send(reply)
    except StopIteration:
        pass
    return f"{mechanism} as {settings.username}"
