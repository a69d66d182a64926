"""Deliverability: is the sending server on a blacklist, and which addresses bounced before.

`check_blacklists(ip_or_host)` asks the DNS blacklists (RFC 5782) and tells
listings from errors; `SuppressionList` / `SqliteSuppressionList` remember
hard bounces so that `send()` refuses those recipients (docs/deliverability.md).
"""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._dnsbl import BlacklistCheck, check_blacklists
    from ._lists import BARRACUDA, DEFAULT_BLACKLISTS, Blacklist
    from ._report import BlacklistReport, ListResult, ListStatus
    from ._suppression import SqliteSuppressionList, Suppression, SuppressionList

__all__ = [
    "BARRACUDA",
    "DEFAULT_BLACKLISTS",
    "Blacklist",
    "BlacklistCheck",
    "BlacklistReport",
    "ListResult",
    "ListStatus",
    "SqliteSuppressionList",
    "Suppression",
    "SuppressionList",
    "check_blacklists",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._dnsbl": ("BlacklistCheck", "check_blacklists"),
            "._lists": ("BARRACUDA", "DEFAULT_BLACKLISTS", "Blacklist"),
            "._report": ("BlacklistReport", "ListResult", "ListStatus"),
            "._suppression": ("SqliteSuppressionList", "Suppression", "SuppressionList"),
        },
        globals(),
    )
