"""OAuth2 for SMTP and IMAP: token providers, token stores, and the sign-in flows.

`TokenProvider` is what `SmtpSettings(oauth2_token=...)` and `ImapSettings` take;
`TokenStore` (`MemoryTokenStore`, `SqliteTokenStore`) keeps each tenant's refresh
token. The provider adapters are extras: `mailbridge.oauth.microsoft`
(`pip install mailbridge-documents[microsoft]`, msal) and `mailbridge.oauth.google`
(`[google]`, google-auth). See docs/oauth.md.
"""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._flows import AuthorizationRequest, DeviceCode
    from ._provider import AccessToken, CachingTokenProvider, TokenProvider, TokenSource
    from ._sqlite import SqliteTokenStore
    from ._store import MemoryTokenStore, TokenStore

__all__ = [
    "AccessToken",
    "AuthorizationRequest",
    "CachingTokenProvider",
    "DeviceCode",
    "MemoryTokenStore",
    "SqliteTokenStore",
    "TokenProvider",
    "TokenSource",
    "TokenStore",
]

if not TYPE_CHECKING:  # the SMTP layer needs only _provider; the stores (sqlite3) load on use
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._flows": ("AuthorizationRequest", "DeviceCode"),
            "._provider": ("AccessToken", "CachingTokenProvider", "TokenProvider", "TokenSource"),
            "._sqlite": ("SqliteTokenStore",),
            "._store": ("MemoryTokenStore", "TokenStore"),
        },
        globals(),
    )
