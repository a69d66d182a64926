"""Test helpers for applications that use mailbridge.

`FakeSmtpServer` is a real SMTP server (aiosmtpd) on loopback with TLS, AUTH,
PIPELINING and fault injection; `FakeDnsServer` is an authoritative DNS
server (UDP and TCP) for zones given as data; `FakeImapServer` is an
in-memory IMAP4rev1 server with SPECIAL-USE folders, checked against Dovecot by
the same scenarios; `FakeAutoconfigServer` serves autoconfig
documents over HTTPS; `FakeAuthorizationServer` is an OAuth2 authorization server
over HTTPS that msal and google-auth sign in against; `RealMailServers` (in
`mailbridge.testing.realservers`) starts Postfix and Dovecot (Debian packages) for
integration tests. The pytest plugin provides the fixtures `smtp_server`,
`imap_server`, `dns_server`, `autoconfig_server` and `delivery_client`.

All but `FakeDnsServer` need the `testing` extra (aiosmtpd, trustme). The names
are imported on first use, so that the pytest plugin loads without the extra;
without it, using one raises an `ImportError` that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from .._distribution import install_hint
from .._lazy import exports

if TYPE_CHECKING:
    from ._autoconfig import AutoconfigRequest, FakeAutoconfigServer, client_config_xml
    from ._dns import DnsQuery, FakeDnsServer
    from ._imap import FakeImapServer, ImapMessage
    from ._oauth import FakeAuthorizationServer, FakeBrowser
    from ._smtp import FakeSmtpServer, ReceivedMessage

__all__ = [
    "AutoconfigRequest",
    "DnsQuery",
    "FakeAuthorizationServer",
    "FakeAutoconfigServer",
    "FakeBrowser",
    "FakeDnsServer",
    "FakeImapServer",
    "FakeSmtpServer",
    "ImapMessage",
    "ReceivedMessage",
    "client_config_xml",
]

# The distributions of the `testing` extra, by their import names.
_EXTRA_MODULES = frozenset({"aiosmtpd", "trustme"})


def import_helper(module: str) -> ModuleType:
    """Import `mailbridge.testing.<module>`; without the extra, ImportError says what to install."""
    try:
        return importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _EXTRA_MODULES:
            raise
        raise ImportError(
            f"mailbridge.testing.{module} needs the testing extra ({exc.name} is missing): "
            f"{install_hint('testing')}",
            name=f"{__name__}.{module}",
        ) from exc


if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "_autoconfig": ("AutoconfigRequest", "FakeAutoconfigServer", "client_config_xml"),
            "_dns": ("DnsQuery", "FakeDnsServer"),
            "_imap": ("FakeImapServer", "ImapMessage"),
            "_oauth": ("FakeAuthorizationServer", "FakeBrowser"),
            "_smtp": ("FakeSmtpServer", "ReceivedMessage"),
        },
        globals(),
        import_helper,
    )
