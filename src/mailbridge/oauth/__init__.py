"""OAuth2 for SMTP and IMAP: token providers, token stores, and the sign-in flows.

`TokenProvider` is what `SmtpSettings(oauth2_token=...)` and `ImapSettings` take;
`TokenStore` (`MemoryTokenStore`, `SqliteTokenStore`) keeps each tenant's refresh
token. The provider adapters are extras: `mailbridge.oauth.microsoft`
(`pip install mailbridge-documents[microsoft]`, msal) and `mailbridge.oauth.google`
(`[google]`, google-auth). See docs/oauth.md.
"""

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
