"""Test helpers for applications that use mailbridge (needs the `testing` extra).

`FakeSmtpServer` is a real SMTP server (aiosmtpd) on loopback with TLS, AUTH,
PIPELINING and fault injection; `FakeDnsServer` is an authoritative DNS
server (UDP and TCP) for zones given as data; `FakeImapServer` is an
in-memory IMAP4rev1 server with SPECIAL-USE folders, checked against Dovecot by
the same scenarios; `FakeAutoconfigServer` serves autoconfig
documents over HTTPS; `RealMailServers` (in `mailbridge.testing.realservers`)
starts Postfix and Dovecot (Debian packages) for integration tests. The pytest
plugin provides the fixtures `smtp_server`, `imap_server`, `dns_server`,
`autoconfig_server` and `delivery_client`.
"""

from .autoconfig import AutoconfigRequest, FakeAutoconfigServer, client_config_xml
from .dns import DnsQuery, FakeDnsServer
from .imap import FakeImapServer, ImapMessage
from .smtp import FakeSmtpServer, ReceivedMessage

__all__ = [
    "AutoconfigRequest",
    "DnsQuery",
    "FakeAutoconfigServer",
    "FakeDnsServer",
    "FakeImapServer",
    "FakeSmtpServer",
    "ImapMessage",
    "ReceivedMessage",
    "client_config_xml",
]
