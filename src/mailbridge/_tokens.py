"""The `TokenProvider` protocol (a leaf module: settings and `mailbridge.oauth` both use it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["TokenProvider", "TokenSource"]


@runtime_checkable
class TokenProvider(Protocol):
    """Gives OAuth2 access tokens; thread-safe.

    `token()` returns a token valid for a while yet (refreshing it first when it is
    about to expire); `invalidate()` says the server refused the last one, so the
    next `token()` gets a new one. Failures are `OAuthError`s.
    """

    def token(self) -> str:
        """A fresh access token."""
        ...

    def invalidate(self) -> None:
        """The last token was refused: do not hand it out again."""
        ...


TokenSource = TokenProvider | Callable[[], str]
