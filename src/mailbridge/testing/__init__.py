"""Test helpers for applications that use mailbridge (needs the `testing` extra).

`FakeSmtpServer` is a real SMTP server (aiosmtpd) on loopback with TLS, AUTH,
PIPELINING and fault injection; `RealMailServers` starts Postfix and Dovecot
(Debian packages) for integration tests. The pytest plugin provides the
`fake_smtp` fixture.
"""

from .smtp import FakeSmtpServer, ReceivedMessage

__all__ = ["FakeSmtpServer", "ReceivedMessage"]
