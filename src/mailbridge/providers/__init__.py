"""Mail provider presets: servers, login quirks and advice for well-known providers.

`ProviderRegistry.default()` holds the built-in presets shipped with mailbridge;
look a provider up by address domain (`by_domain`), by MX host of a custom domain
(`by_mx`) or by id (`by_id`), and add your own with `register` or `load`, which
return a new registry and leave the default untouched.
"""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._discovery import (
        Candidate,
        DiscoveryCache,
        DiscoveryProgress,
        DiscoveryResult,
        SourceReport,
        discover,
    )
    from ._fetch import Fetcher, HttpsFetcher
    from ._models import (
        AUTH_METHODS,
        PLACEHOLDERS,
        USERNAME_FORMS,
        AuthMethod,
        Endpoint,
        Provider,
        SendingLimits,
        UsernameForm,
        expand,
        normalize_domain,
    )
    from ._oauth_info import Milestone, OAuth2Info
    from ._oauth_setup import OAuthSetup
    from ._registry import ProviderRegistry
    from ._wizard import SetupAttempt, SetupResult, setup

__all__ = [
    "AUTH_METHODS",
    "PLACEHOLDERS",
    "USERNAME_FORMS",
    "AuthMethod",
    "Candidate",
    "DiscoveryCache",
    "DiscoveryProgress",
    "DiscoveryResult",
    "Endpoint",
    "Fetcher",
    "HttpsFetcher",
    "Milestone",
    "OAuth2Info",
    "OAuthSetup",
    "Provider",
    "ProviderRegistry",
    "SendingLimits",
    "SetupAttempt",
    "SetupResult",
    "SourceReport",
    "UsernameForm",
    "discover",
    "expand",
    "normalize_domain",
    "setup",
]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._discovery": (
                "Candidate",
                "DiscoveryCache",
                "DiscoveryProgress",
                "DiscoveryResult",
                "SourceReport",
                "discover",
            ),
            "._fetch": ("Fetcher", "HttpsFetcher"),
            "._models": (
                "AUTH_METHODS",
                "PLACEHOLDERS",
                "USERNAME_FORMS",
                "AuthMethod",
                "Endpoint",
                "Provider",
                "SendingLimits",
                "UsernameForm",
                "expand",
                "normalize_domain",
            ),
            "._oauth_info": ("Milestone", "OAuth2Info"),
            "._oauth_setup": ("OAuthSetup",),
            "._registry": ("ProviderRegistry",),
            "._wizard": ("SetupAttempt", "SetupResult", "setup"),
        },
        globals(),
    )
