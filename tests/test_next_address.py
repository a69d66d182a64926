"""A host whose first address does not answer: the fetch and the wizard try the next one."""

from __future__ import annotations

import ssl

import dns.rdataset
import dns.resolver
import pytest

from mailbridge import Security
from mailbridge.providers import Endpoint, HttpsFetcher, Provider, ProviderRegistry, setup
from mailbridge.providers._hosts import resolve_host
from mailbridge.testing import FakeAutoconfigServer, FakeDnsServer, FakeSmtpServer

NAME = "mail.two.example"
DEAD, LIVE = "127.0.0.2", "127.0.0.1"  # nothing listens on DEAD: it refuses
pytestmark = pytest.mark.dns_server(
    zones={"two.example": {"mail": {"A": [DEAD, LIVE]}, "autoconfig": {"A": [DEAD, LIVE]}}}
)


@pytest.fixture
def resolver(dns_server: FakeDnsServer, monkeypatch: pytest.MonkeyPatch) -> dns.resolver.Resolver:
    """A resolver of the zone, whose answers keep the zone's order (DEAD first)."""
    to_wire = dns.rdataset.Rdataset.to_wire  # dnspython shuffles answers by default
    monkeypatch.setattr(
        dns.rdataset.Rdataset,
        "to_wire",
        lambda self, *args, **kwargs: to_wire(self, *args, **{**kwargs, "want_shuffle": False}),
    )
    resolver = dns_server.resolver(timeout=0.5)
    assert resolve_host(NAME, resolver, 1.0) == [DEAD, LIVE]
    return resolver


def test_fetch_connects_to_the_next_address(resolver: dns.resolver.Resolver) -> None:
    with FakeAutoconfigServer(certificate_hostnames=["autoconfig.two.example"], host=LIVE) as web:
        web.add_config("two.example", "<clientConfig/>")
        fetcher = HttpsFetcher(
            resolver=resolver,
            ssl_context=web.client_ssl_context(),
            port=web.port,
            allow_private=True,
        )
        body = fetcher.fetch("https://autoconfig.two.example/mail/config-v1.1.xml", 3.0)
    assert body == b"<clientConfig/>"


def test_the_wizard_logs_in_at_the_next_address(resolver: dns.resolver.Resolver) -> None:
    with FakeSmtpServer(
        tls="implicit", users={"x@two.example": "pw"}, certificate_hostnames=[NAME], host=LIVE
    ) as smtp:
        provider = Provider(
            id="two-mail",
            name="Two Mail",
            domains=("two.example",),
            smtp=(Endpoint(NAME, smtp.port, Security.IMPLICIT_TLS),),
        )
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(smtp.ca_file))
        result = setup(
            "x@two.example",
            "pw",
            want_imap=False,
            registry=ProviderRegistry.default().register(provider),
            resolver=resolver,
            guess=False,
            timeout=3,
            ssl_context=context,
            allow_private=True,
            connect_timeout=2,
            command_timeout=3,
        )
    assert result.ok and result.smtp is not None and result.smtp.host == NAME
    assert len(result.attempts) == 1 and result.attempts[0].report.ok
