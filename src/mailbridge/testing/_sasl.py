"""SASL pieces the fake servers share: reading and checking XOAUTH2 / OAUTHBEARER responses."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Protocol

__all__ = [
    "OAUTH_MECHANISMS",
    "TokenIssuer",
    "bearer_host",
    "bearer_login",
    "oauth_error_challenge",
    "token_valid",
]

OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


class TokenIssuer(Protocol):
    """Who vouches for access tokens (a `FakeAuthorizationServer`)."""

    def accepts(self, user: str, token: str) -> bool: ...


def _unescape(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


def bearer_login(mechanism: str, blob: bytes) -> tuple[str, str]:
    """The user and the bearer token in an XOAUTH2 or OAUTHBEARER (RFC 7628) response."""
    text = blob.decode("utf-8", "replace")
    user = ""
    if mechanism == "OAUTHBEARER":
        gs2, _, text = text.partition("\x01")
        user = next((_unescape(p[2:]) for p in gs2.split(",") if p.startswith("a=")), "")
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    auth = fields.get("auth", "")
    token = auth[7:] if auth[:7].lower() == "bearer " else ""
    return user or fields.get("user", ""), token


def bearer_host(mechanism: str, blob: bytes) -> str | None:
    """The `host=` field of an OAUTHBEARER response (RFC 7628 3.1), None when it has none."""
    if mechanism != "OAUTHBEARER":
        return None
    _, _, text = blob.decode("utf-8", "replace").partition("\x01")
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    return fields.get("host")


def token_valid(
    user: str, token: str, tokens: Mapping[str, str], issuer: TokenIssuer | None
) -> bool:
    """True when `token` is `user`'s fixed token, or one `issuer` issued and still honours."""
    expected = tokens.get(user)
    if expected is not None and token and hmac.compare_digest(expected.encode(), token.encode()):
        return True
    return issuer is not None and bool(token) and issuer.accepts(user, token)


def oauth_error_challenge(mechanism: str, scope: str, xoauth2_status: str = "401") -> bytes:
    """The JSON a server sends as its challenge after refusing a token (before the 5xx/NO);
    Gmail says status 401 on SMTP and 400 on IMAP for XOAUTH2, RFC 7628 "invalid_token"."""
    status = xoauth2_status if mechanism == "XOAUTH2" else "invalid_token"
    return json.dumps({"status": status, "schemes": "Bearer", "scope": scope}).encode()
