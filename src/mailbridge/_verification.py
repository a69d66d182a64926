"""Proving that a tenant owns an address before it is used as Reply-To or From.

`issue_token()` signs the address and an expiry with the application's secret
(HMAC-SHA256, no server-side state); `verify_token()` checks it;
`verification_email()` builds the email that carries the link.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable

import attrs

from ._addresses import parse_mailbox
from ._message import DocumentEmail
from .errors import ConfigurationError, TokenExpired, TokenInvalid, TokenMismatch
from .settings import Secret

__all__ = ["VerifiedSender", "issue_token", "verification_email", "verify_token"]

MIN_SECRET_BYTES = 16
DEFAULT_VALIDITY = dt.timedelta(days=2)
MAX_VALIDITY = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(minutes=5)
_PURPOSE = "mailbridge-sender-v1"


@attrs.frozen
class VerifiedSender:
    """An address whose owner followed the verification link."""

    address: str
    issued_at: dt.datetime
    expires_at: dt.datetime


def _key(secret: Secret | str | bytes) -> bytes:
    raw = secret.reveal() if isinstance(secret, Secret) else secret
    key = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError("secret", f"use at least {MIN_SECRET_BYTES} random bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"{_PURPOSE}.{payload}".encode(), hashlib.sha256).digest())


def _now(clock: Callable[[], dt.datetime] | None) -> dt.datetime:
    return (clock or (lambda: dt.datetime.now(dt.UTC)))().astimezone(dt.UTC)


def issue_token(
    address: str,
    secret: Secret | str | bytes,
    *,
    valid_for: dt.timedelta = DEFAULT_VALIDITY,
    clock: Callable[[], dt.datetime] | None = None,
) -> str:
    """A URL-safe token proving, until it expires, that a link was sent to `address`."""
    mailbox = parse_mailbox("address", address)
    if not dt.timedelta(0) < valid_for <= MAX_VALIDITY:
        raise ConfigurationError("valid_for", f"must be between 0 and {MAX_VALIDITY.days} days")
    now = _now(clock)
    payload = _b64(
        json.dumps(
            {
                "a": mailbox.address,
                "i": int(now.timestamp()),
                "e": int((now + valid_for).timestamp()),
            },
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{_sign(_key(secret), payload)}"


def verify_token(
    token: str,
    secret: Secret | str | bytes,
    *,
    address: str | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> VerifiedSender:
    """Check a token; raises `TokenInvalid`, `TokenExpired` or `TokenMismatch`."""
    key = _key(secret)
    if not isinstance(token, str):
        raise TokenInvalid("the verification link is not valid (no token)")
    payload, _, signature = token.strip().partition(".")
    if (
        not payload
        or not signature
        or not hmac.compare_digest(signature.encode(), _sign(key, payload).encode())
    ):
        raise TokenInvalid("the verification link is not valid (damaged or not ours)")
    try:
        data = json.loads(_unb64(payload))
        verified = VerifiedSender(
            str(data["a"]),
            dt.datetime.fromtimestamp(int(data["i"]), dt.UTC),
            dt.datetime.fromtimestamp(int(data["e"]), dt.UTC),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TokenInvalid("the verification link is not valid (damaged)") from None
    now = _now(clock)
    if verified.issued_at > now + CLOCK_SKEW or verified.expires_at <= verified.issued_at:
        raise TokenInvalid("the verification link is not valid (impossible dates)")
    if now >= verified.expires_at:
        raise TokenExpired(verified.expires_at)
    if address is not None and parse_mailbox("address", address).address != verified.address:
        raise TokenMismatch(f"the verification link is for {verified.address}, not {address}")
    return verified


def verification_email(
    address: str,
    link: str,
    *,
    app_name: str,
    tenant_name: str | None = None,
) -> DocumentEmail:
    """The email that asks the owner of `address` to confirm it by opening `link`."""
    return DocumentEmail(
        to=address,
        subject="Please confirm your email address for {app}",
        body=(
            "Hello,\n\n{who} wants to send documents from {app} with {address} as the "
            "reply address.\n\nTo confirm that this is your address, open this link:\n"
            "{link}\n\nIf you did not ask for this, ignore this email.\n"
        ),
        placeholders={
            "app": app_name,
            "who": tenant_name or "Someone",
            "address": address,
            "link": link,
        },
        headers={"Auto-Submitted": "auto-generated"},
    )
