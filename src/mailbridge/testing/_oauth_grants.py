"""The fake authorization server's records (codes, device codes, grants, access tokens)
and its small HTTP helpers: form parsing, client credentials, OAuth error bodies."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs

from ._oauth_http import Request, Response

__all__ = [
    "_Access",
    "_Code",
    "_Device",
    "_Grant",
    "_b64url",
    "_client_credentials",
    "_error",
    "_form",
]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@attrs.define
class _Code:
    user: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    nonce: str | None
    expires_at: float


@attrs.define
class _Device:
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    user: str | None = None
    last_poll: float = 0.0
    polls: int = 0


@attrs.define
class _Grant:
    user: str
    client_id: str
    scopes: tuple[str, ...]


@attrs.define
class _Access:
    user: str
    expires_at: float


def _form(request: Request) -> dict[str, str]:
    fields = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str]:
    header = request.headers.get("Authorization") or ""
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode("utf-8")
        except ValueError:
            return "", ""
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


def _error(status: int, error: str, description: str) -> Response:
    codes = [
        int(c)
        for c in description.split(":", maxsplit=1)[0].removeprefix("AADSTS").split()
        if c.isdigit()
    ]
    body: dict[str, Any] = {"error": error, "error_description": description}
    if codes:
        body["error_codes"] = codes
    return Response(status, body)
