"""SMTP AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5, XOAUTH2 and OAUTHBEARER, as a sans-I/O exchange.

`auth_exchange` is a generator: it yields each line to send (with whether it
carries a secret, so it is never logged) and is sent the server's reply to it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Generator

from ... import diagnostics
from ..._pinning import server_name
from ...diagnosis import Category, Diagnosis
from ...errors import AuthenticationError, ProtocolError
from ...reply import SmtpReply
from ...settings import SmtpSettings

__all__ = [
    "OAUTH_MECHANISMS",
    "AuthExchange",
    "auth_exchange",
    "choose_mechanism",
    "oauth_initial_response",
    "shown_line",
]

# Yields (line, secret) to send, is sent the reply; returns the 235 reply or raises.
AuthExchange = Generator[tuple[str, bool], SmtpReply, SmtpReply]

# OAUTHBEARER (RFC 7628, the standard) where offered, else XOAUTH2 (Microsoft 365 has only it).
OAUTH_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
_PREFERENCE_ENCRYPTED = ("PLAIN", "LOGIN", "CRAM-MD5")
_PREFERENCE_PLAINTEXT = ("CRAM-MD5", "PLAIN", "LOGIN")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unsupported(
    settings: SmtpSettings, wanted: str, offered: frozenset[str]
) -> AuthenticationError:
    offered_text = ", ".join(sorted(offered)) or "none"
    return AuthenticationError(
        f"the server does not support AUTH {wanted} (it offers: {offered_text})",
        diagnosis=Diagnosis(
            Category.AUTH_MECHANISM_UNSUPPORTED,
            f"The server does not support the login method {wanted}.",
            (
                f"The server offers: {offered_text}.",
                "OAuth2 needs a server that offers XOAUTH2 or OAUTHBEARER "
                "(e.g. Gmail, Microsoft 365)."
                if wanted in OAUTH_MECHANISMS or wanted == "XOAUTH2 or OAUTHBEARER"
                else "Leave the login method on automatic.",
            ),
        ),
    )


def choose_mechanism(settings: SmtpSettings, offered: frozenset[str], encrypted: bool) -> str:
    """Pick the mechanism to use, or raise `AuthenticationError` when none fits."""
    if settings.oauth2_token is not None:
        wanted = settings.auth_mechanism
        if wanted is None:
            wanted = next((m for m in OAUTH_MECHANISMS if m in offered), "XOAUTH2 or OAUTHBEARER")
        if wanted not in OAUTH_MECHANISMS or wanted not in offered:
            raise _unsupported(settings, wanted, offered)
        return wanted
    if settings.auth_mechanism is not None:
        mechanism = settings.auth_mechanism
        if mechanism not in offered or mechanism in OAUTH_MECHANISMS:
            raise _unsupported(settings, settings.auth_mechanism, offered)
        return settings.auth_mechanism
    for mechanism in _PREFERENCE_ENCRYPTED if encrypted else _PREFERENCE_PLAINTEXT:
        if mechanism in offered:
            return mechanism
    raise _unsupported(settings, "PLAIN or LOGIN", offered)


def shown_line(line: str, secret: bool) -> str:
    """`line` as it may be logged: the command and mechanism kept, every credential hidden."""
    if not secret:
        return line
    words = line.split(" ")
    return " ".join([*words[:2], "********"]) if words[0] == "AUTH" else "********"


def _saslname(text: str) -> str:
    # RFC 5801 section 4: "=" and "," are escaped in the GS2 header's authzid.
    return text.replace("=", "=3D").replace(",", "=2C")


def oauth_initial_response(
    mechanism: str, username: str, token: str, host: str = "", port: int = 0
) -> str:
    """The client's first SASL message for XOAUTH2 or OAUTHBEARER (RFC 7628 3.1), unencoded."""
    if mechanism == "XOAUTH2":
        return f"user={username}\x01auth=Bearer {token}\x01\x01"
    where = f"host={host}\x01port={port}\x01" if host else ""
    return f"n,a={_saslname(username)},\x01{where}auth=Bearer {token}\x01\x01"


def auth_exchange(settings: SmtpSettings, mechanism: str, token: str | None = None) -> AuthExchange:
    """The AUTH exchange for `mechanism`: yields (line, secret), is sent each reply.

    An OAuth mechanism sends `token` (the I/O layer fetched it from
    `settings.oauth2_token`). Returns the 235 reply; raises `AuthenticationError`
    (diagnosed) or `ProtocolError`.
    """
    username = settings.username or ""
    if mechanism in OAUTH_MECHANISMS:
        if token is None:
            raise ValueError("an OAuth mechanism needs the token fetched by the I/O layer")
        # RFC 7628 3.1: host= is the name the client connected to, also when pinned to an address.
        host = server_name(settings)
        first = oauth_initial_response(mechanism, username, token, host, settings.port)
        reply = yield (f"AUTH {mechanism} {_b64(first)}", True)
        if reply.code == 334:
            # The server's JSON error (status, schemes, scope) comes as a challenge; the
            # client ends the exchange (XOAUTH2: an empty line; OAUTHBEARER: %x01, RFC
            # 7628 3.2.3) and the server sends the final 5xx.
            detail = _decode_xoauth2_error(reply.text)
            final = yield ("" if mechanism == "XOAUTH2" else _b64("\x01"), False)
            if final.code == 334:  # it wants more than the mechanism has: cancel (RFC 4954 4)
                final = yield ("*", False)
            if detail:
                final = SmtpReply(
                    final.code,
                    final.enhanced_status,
                    f"{final.text} (OAuth2 error: {detail})".strip(),
                )
            raise diagnostics.auth_failed(final, settings, mechanism)
    else:
        password = settings.password.reveal() if settings.password is not None else ""
        if mechanism == "PLAIN":
            reply = yield ("AUTH PLAIN " + _b64(f"\x00{username}\x00{password}"), True)
        elif mechanism == "LOGIN":
            reply = yield ("AUTH LOGIN", False)
            if reply.code == 334:
                reply = yield (_b64(username), True)
            if reply.code == 334:
                reply = yield (_b64(password), True)
        else:  # CRAM-MD5
            reply = yield ("AUTH CRAM-MD5", False)
            if reply.code == 334:
                try:
                    challenge = base64.b64decode(reply.text.strip(), validate=True)
                except binascii.Error:
                    yield ("*", False)
                    raise ProtocolError(
                        "the server sent a CRAM-MD5 challenge that is not base64",
                        reply=reply,
                        diagnosis=Diagnosis(
                            Category.PROTOCOL,
                            "The server's login method is broken.",
                            ("Choose another login method (auth_mechanism='PLAIN').",),
                        ),
                    ) from None
                digest = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
                reply = yield (_b64(f"{username} {digest}"), True)
    if reply.code != 235:
        if reply.code == 334:  # the server wants more than the mechanism defines: abort
            reply = yield ("*", False)
        raise diagnostics.auth_failed(reply, settings, mechanism)
    return reply


def _decode_xoauth2_error(text: str) -> str:
    try:
        data = json.loads(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [
        f"{key}={_printable(data[key])}" for key in ("status", "scope", "schemes") if key in data
    ]
    return ", ".join(parts)


def _printable(value: object, limit: int = 100) -> str:
    """A server's JSON value as one short line: control characters become spaces."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return " ".join(text.split())[:limit]
