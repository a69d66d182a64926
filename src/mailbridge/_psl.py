"""The Public Suffix List: where a registered (organisational) domain begins.

The list ships inside the `publicsuffixlist` package, so lookups never touch
the network. Both sections are used: the ICANN suffixes (``co.uk``, ``co.id``,
``com.de``) and the private ones that hosting platforms register
(``github.io``, ``blogspot.com``), so that two customers of such a platform
are never taken for one organisation (RFC 7489 3.2 leaves the choice to the
list; its section 3.2 example treats every listed suffix as public).
Names the list does not know end in an unknown top-level domain, which counts
as a public suffix (``mx.hoster.example`` belongs to ``hoster.example``).
"""

from __future__ import annotations

import threading

from publicsuffixlist import PublicSuffixList

__all__ = ["is_public_suffix", "organizational_domain", "registered_domain"]

_lock = threading.Lock()
_parsed: list[PublicSuffixList] = []


def _list() -> PublicSuffixList:
    with _lock:  # parsing takes ~40 ms: once, on first use
        if not _parsed:
            _parsed.append(PublicSuffixList())
        return _parsed[0]


def _clean(name: str) -> str:
    return name.rstrip(".").lower()


def registered_domain(name: str) -> str | None:
    """The registered domain of `name` (public suffix plus one label), or None.

    None when `name` is itself a public suffix (``co.uk``, ``com.de``), a
    single label, or not a well-formed domain name. IDNs work in both U-label
    and A-label form; a trailing dot is ignored.
    """
    found = _list().privatesuffix(_clean(name))
    return found if isinstance(found, str) else None


def is_public_suffix(name: str) -> bool:
    """True when `name` is a public suffix itself: nobody's registered domain."""
    cleaned = _clean(name)
    return bool(cleaned) and _list().is_public(cleaned)


def organizational_domain(domain: str) -> str:
    """The organisational domain of `domain` (RFC 7489 3.2), by the Public Suffix List.

    The list's ICANN and private sections both count (see above).
    A name that is itself a public suffix, or a single label, is its own
    organisational domain.
    """
    return registered_domain(domain) or domain.rstrip(".").lower()
