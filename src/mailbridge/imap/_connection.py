"""Opening an IMAP session with imapclient: verified TLS, STARTTLS never skipped, login.

The session is a `BoundedClient`: every read is bounded by `ImapLimits` and
every failure of a command is a typed `MailbridgeError` (see `_client`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable

import imapclient
import imapclient.exceptions

from .. import diagnostics
from .._pinning import server_name, where
from .._results import Step, timed_step
from .._tokens import TokenSource
from ..diagnosis import Category, Diagnosis
from ..errors import (
    AuthenticationError,
    DeliveryError,
    ImapConnectionLost,
    ProtocolError,
    TlsError,
)
from ..oauth._provider import fetch_token, renewable
from ..settings import ImapSettings, Security
from ..smtp._core import OAUTH_MECHANISMS, oauth_initial_response
from ._client import BoundedClient
from ._failures import PARSE_FAILURES, server_text
from ._wire import ImapLimits

__all__ = ["ImapLimits", "close_imap", "open_imap"]


def _protocol(exc: Exception) -> ProtocolError:
    return ProtocolError(
        f"the IMAP server answered unexpectedly: {server_text(exc)}",
        diagnosis=Diagnosis(
            Category.PROTOCOL,
            "The server does not speak IMAP as expected.",
            ("Check the port number and the security setting.",),
        ),
    )


def _connect(settings: ImapSettings, context: ssl.SSLContext, limits: ImapLimits) -> BoundedClient:
    try:
        return BoundedClient(
            settings.host,
            settings.port,
            implicit_tls=settings.security == Security.IMPLICIT_TLS,
            ssl_context=context,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.command_timeout,
            limits=limits,
        )
    except DeliveryError:
        raise
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise diagnostics.tls_failed(exc, settings) from None
    except OSError as exc:
        raise diagnostics.connect_failed(exc, settings) from None
    except (imapclient.exceptions.IMAPClientError, *PARSE_FAILURES) as exc:
        raise _protocol(exc) from None


def open_imap(
    settings: ImapSettings,
    observer: Callable[[Step], None] | None = None,
    *,
    limits: ImapLimits | None = None,
) -> BoundedClient:
    """A logged-in IMAP session for `settings`; raises a `DeliveryError` subclass on failure.

    `limits` bounds what the server may send per command (default `ImapLimits()`;
    an importer passes `ImapLimits.for_parts(max_part_bytes)`). Every command of
    the returned client raises typed errors only (`ImapCommandFailed`,
    `ImapConnectionLost`, `ImapLimitExceeded`, `ImapTimeout`).
    """
    context = settings.create_ssl_context()
    with timed_step(observer, "connect") as note:
        client = _connect(settings, context, limits or ImapLimits())
        note[0] = where(settings)
    with contextlib.suppress(OSError, AttributeError):
        # imaplib writes a command and its literal separately: without this, Nagle's
        # algorithm and the peer's delayed ACK add ~40 ms to every APPEND on a kept session.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if settings.security == Security.STARTTLS:
            with timed_step(observer, "starttls") as note:
                if not client.has_capability("STARTTLS"):
                    raise TlsError(
                        "the IMAP server does not offer STARTTLS; refusing to continue",
                        diagnosis=Diagnosis(
                            Category.STARTTLS_NOT_OFFERED,
                            "The server does not offer an encrypted connection on this port.",
                            ("Try port 993 with SSL/TLS.",),
                        ),
                    )
                try:
                    # imaplib's STARTTLS on the wire (whatever imapclient's version does):
                    # it refuses bytes after the OK and forgets all read before it.
                    client.wire.starttls(context)
                except DeliveryError:
                    raise
                except (ssl.SSLError, ssl.CertificateError) as exc:
                    raise diagnostics.tls_failed(exc, settings) from None
                except (imapclient.exceptions.IMAPClientError, OSError, *PARSE_FAILURES) as exc:
                    raise client.typed_error(exc, "STARTTLS") from None
                note[0] = "TLS"
        if settings.username is not None:
            with timed_step(observer, "login") as note:
                _login(client, settings)
                note[0] = f"as {settings.username}"
    except BaseException:
        close_imap(client)
        raise
    return client


def _login(client: BoundedClient, settings: ImapSettings) -> None:
    encrypted = settings.security != Security.NONE
    if not encrypted and not settings.allow_plaintext_auth:
        raise AuthenticationError(
            "refusing to send the password over an unencrypted IMAP connection",
            diagnosis=Diagnosis(
                Category.AUTH_REQUIRES_TLS,
                "The password would travel unencrypted, so it was not sent.",
                ("Choose SSL/TLS (usually port 993) or STARTTLS (usually 143).",),
            ),
        )
    assert settings.username is not None
    try:
        if settings.oauth2_token is not None:
            _oauth_login(client, settings, settings.oauth2_token)
        else:
            assert settings.password is not None
            _password_login(client, settings.username, settings.password.reveal())
    except imapclient.exceptions.LoginError as exc:
        # imapclient turns every failure into LoginError: when the wire broke (closed,
        # silent, flooding), that is the error, and nothing is known about the password.
        if isinstance(client.wire.failure, DeliveryError):
            raise client.typed_error(exc, "LOGIN") from None
        raise diagnostics.imap_auth_failed(settings, server_text(exc)) from None
    except DeliveryError:
        raise
    except (OSError, imapclient.exceptions.IMAPClientError, *PARSE_FAILURES) as exc:
        if isinstance(client.wire.failure, DeliveryError):
            raise client.typed_error(exc, "LOGIN") from None
        # Never chained, never quoted: a UnicodeEncodeError would carry the password.
        raise ImapConnectionLost(
            f"the IMAP connection failed during login ({type(exc).__name__})",
            diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was lost."),
            temporary=True,
        ) from None


def _oauth_login(client: BoundedClient, settings: ImapSettings, source: TokenSource) -> None:
    """AUTHENTICATE OAUTHBEARER (RFC 7628) or XOAUTH2, whichever the server offers.

    A refused token from a `TokenProvider` is invalidated and one new token tried.
    """
    assert settings.username is not None
    mechanism = next((m for m in OAUTH_MECHANISMS if client.has_capability(f"AUTH={m}")), None)
    if mechanism is None:
        raise AuthenticationError(
            "the IMAP server offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2",
            diagnosis=Diagnosis(
                Category.AUTH_MECHANISM_UNSUPPORTED,
                "This server does not accept OAuth2 logins.",
                ("Use a password (or app password) for this server instead.",),
            ),
        )
    token: str | None = None
    refusal: imapclient.exceptions.LoginError | None = None
    for attempt in range(2 if renewable(source) else 1):
        renewed = fetch_token(source, refused=token)
        if refusal is not None and renewed == token:  # kept: fresh, and refused already
            raise refusal
        token = renewed
        # RFC 7628 3.1: host= is the server's name, also when pinned to a checked address.
        first = oauth_initial_response(
            mechanism, settings.username, token, server_name(settings), settings.port
        )
        try:
            client.sasl_login(mechanism, _sasl_answers(mechanism, first))
        except imapclient.exceptions.LoginError as exc:
            if attempt or not renewable(source) or isinstance(client.wire.failure, DeliveryError):
                raise
            text = server_text(exc).upper()
            if "AUTHENTICATIONFAILED" not in text and "AUTHENTICATE FAILED" not in text:
                raise
            refusal = exc
            continue
        return


def _sasl_answers(mechanism: str, first: str) -> Callable[[bytes], str | None]:
    """The client's answers: `first`, then the end of a failed exchange (RFC 7628 3.2.3:
    %x01 for OAUTHBEARER, an empty line for XOAUTH2), then None (imaplib sends "*")."""
    answers = iter((first, "" if mechanism == "XOAUTH2" else "\x01"))
    return lambda _challenge: next(answers, None)


def _password_login(client: BoundedClient, username: str, password: str) -> None:
    """LOGIN for ASCII credentials; AUTHENTICATE PLAIN in UTF-8 (RFC 4616, 6855) otherwise."""
    if username.isascii() and password.isascii():
        client.login(username, password)
        return
    if not client.has_capability("AUTH=PLAIN"):
        raise AuthenticationError(
            "the IMAP server does not offer AUTHENTICATE PLAIN, which non-ASCII user names "
            "and passwords need (IMAP LOGIN is ASCII only)",
            diagnosis=Diagnosis(
                Category.AUTH_MECHANISM_UNSUPPORTED,
                "This server cannot take a user name or password with non-ASCII characters.",
                (
                    "Choose a password of ASCII letters, digits and punctuation only.",
                    "Or ask the provider to offer AUTH=PLAIN (RFC 4616) on IMAP.",
                ),
            ),
        )
    client.plain_login(username, password)


def close_imap(client: imapclient.IMAPClient) -> None:
    """LOGOUT politely, or just close; never raises."""
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()
