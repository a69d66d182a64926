"""`TokenProvider`: where SMTP and IMAP get an OAuth2 access token, refreshed before expiry."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import attrs

from .._tokens import TokenProvider, TokenSource
from ..diagnosis import Category, Diagnosis
from ..errors import AuthenticationError, MailbridgeError, OAuthError
from ..settings import Secret

__all__ = [
    "AccessToken",
    "CachingTokenProvider",
    "TokenProvider",
    "TokenSource",
    "fetch_token",
    "renewable",
]

DEFAULT_MARGIN = 300.0  # seconds before expiry a token is renewed (msal's own margin)
# A token renewed because the server refused its predecessor, and refused too, is not
# renewed again for this long: the server refuses every token, renewing would cost a
# refresh per message of a batch.
DEFAULT_REFUSAL_COOLDOWN = 60.0
# While renewing fails for a temporary reason, the cached token is handed out while it
# lives at least this long yet (seconds): long enough for one login.
STILL_VALID = 5.0
# Printable ASCII without spaces (RFC 6750's b64token is narrower): no CR/LF, ^A or
# non-ASCII that would break the SASL message's framing.
_TOKEN_SYNTAX = re.compile(r"[\x21-\x7e]+")


def _to_secret(value: Secret | str) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)


@attrs.frozen
class AccessToken:
    """An access token and when it expires (epoch seconds); `repr` hides the value."""

    value: Secret = attrs.field(converter=_to_secret)
    expires_at: float


class CachingTokenProvider:
    """A `TokenProvider` around `acquire(rejected)`, called only when a new token is needed.

    `acquire` gets the token the server refused (or None when the cached one merely
    expires within `margin` seconds) and returns a new `AccessToken`; calls are
    serialised, so threads sharing the provider refresh once. A token that replaced a
    refused one and is refused as well is kept for `refusal_cooldown` seconds (the
    server refuses every token; a refresh per connection would not help).
    """

    def __init__(
        self,
        acquire: Callable[[str | None], AccessToken],
        *,
        margin: float = DEFAULT_MARGIN,
        clock: Callable[[], float] = time.time,
        refusal_cooldown: float = DEFAULT_REFUSAL_COOLDOWN,
    ) -> None:
        self._acquire = acquire
        self._margin = margin
        self._cooldown = refusal_cooldown
        self._replaced_at: float | None = None  # when the current token replaced a refused one
        self._clock = clock
        self._lock = threading.Lock()
        self._current: AccessToken | None = None
        self._renew_at = 0.0
        self._rejected: str | None = None

    def token(self) -> str:
        """The cached token, or a new one when it expires within the margin or was refused.

        A token living less than twice the margin is renewed at half its life, not on
        every call (a refresh per message). When renewing fails for a temporary reason
        (the endpoint is down: `OAuthUnavailable`), the cached token is given while it has
        not expired; after `invalidate()` there is none to give.
        """
        with self._lock:
            current = self._current
            if current is None or self._renew_at <= self._clock():
                try:
                    fresh = self._acquire(self._rejected)
                except OAuthError as exc:
                    # The endpoint is down (or busy): a token that has not expired still
                    # sends; the next call tries again (fast, while the circuit is open).
                    if not exc.temporary or current is None or not self._alive(current):
                        raise
                    return current.value.reveal()
                current = fresh
                replaced = self._rejected is not None
                self._current, self._rejected = current, None
                self._replaced_at = self._clock() if replaced else None
                lifetime = max(0.0, current.expires_at - self._clock())
                self._renew_at = current.expires_at - min(self._margin, lifetime / 2)
            return current.value.reveal()

    def _alive(self, token: AccessToken) -> bool:
        return token.expires_at - STILL_VALID > self._clock()

    def invalidate(self) -> None:
        """Forget the cached token; the next `token()` acquires one the server has not refused."""
        with self._lock:
            if self._current is not None:
                self._rejected = self._current.value.reveal()
            self._current = None

    def reject(self, token: str) -> None:
        """The server refused `token`: forget it, unless another thread already replaced it
        (then the cached token is newer, and renewing again would waste a rotation), or it
        replaced a refused token less than `refusal_cooldown` s ago (then `token()` gives
        it again, and the caller does not retry)."""
        with self._lock:
            if self._current is None:
                self._rejected = token
            elif self._current.value.reveal() == token:
                replaced_at = self._replaced_at
                if replaced_at is not None and self._clock() - replaced_at < self._cooldown:
                    return
                self._current, self._rejected = None, token

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def renewable(source: TokenSource | None) -> bool:
    """True when `source` can be told a token was refused (then one retry makes sense)."""
    return isinstance(source, TokenProvider)


def fetch_token(source: TokenSource, *, refused: str | None = None) -> str:
    """A token from `source`; `refused` is the token the server just refused, if any.

    `MailbridgeError`s (an `OAuthError`) pass unchanged; any other failure of the
    source becomes an `AuthenticationError` that never quotes it (it may hold a secret).
    """
    try:
        if isinstance(source, TokenProvider):
            if isinstance(source, CachingTokenProvider) and refused is not None:
                source.reject(refused)
            elif refused is not None:
                source.invalidate()
            token = source.token()
        else:
            token = source()
    except MailbridgeError:
        raise
    except Exception as exc:  # the application's own callable: a network error, ...
        raise AuthenticationError(
            f"the OAuth2 token provider failed ({type(exc).__name__})",
            diagnosis=Diagnosis(
                Category.AUTH_FAILED,
                "No OAuth2 access token could be obtained.",
                ("Sign in again to the email account to renew the authorisation.",),
            ),
        ) from None  # the provider's own error may carry a refresh token or URL
    if not isinstance(token, str) or not token:
        raise AuthenticationError(
            "the OAuth2 token provider returned no token",
            diagnosis=Diagnosis(
                Category.AUTH_FAILED,
                "No OAuth2 access token was available.",
                ("Sign in again to the email account to renew the authorisation.",),
            ),
        )
    if not _TOKEN_SYNTAX.fullmatch(token):  # never sent, never quoted: it may be half a secret
        raise AuthenticationError(
            "the OAuth2 token provider returned a malformed token "
            "(spaces, control characters or non-ASCII)",
            diagnosis=Diagnosis(
                Category.AUTH_FAILED,
                "The OAuth2 access token is not usable.",
                ("The application's token provider is broken; report it to its developers.",),
            ),
        )
    return token
