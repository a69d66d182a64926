"""What the interactive sign-in flows hand to the application between their two halves."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["AuthorizationRequest", "DeviceCode"]


@attrs.frozen
class AuthorizationRequest:
    """The first half of a web (authorization-code) sign-in.

    Redirect the user's browser to `url`; keep the whole request (`data` is a
    JSON-serialisable dict holding the PKCE verifier and nonce, so keep it in the
    server-side session, never in the page) until the browser comes back to the
    redirect URI, then pass it with the callback's parameters to `finish_authorization`.
    """

    url: str
    state: str
    data: dict[str, Any] = attrs.field(repr=False, factory=dict)


@attrs.frozen
class DeviceCode:
    """A device-code sign-in in progress: show `message` (or the code and the URL)."""

    user_code: str
    verification_uri: str
    message: str
    expires_at: float
    data: dict[str, Any] = attrs.field(repr=False, factory=dict)
