"""discover(): every source offline, on FakeDnsServer, FakeAutoconfigServer and fake servers."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from mailbridge import Security
from mailbridge.providers import HttpsFetcher, discover
from mailbridge.testing import FakeAutoconfigServer, FakeDnsServer, FakeImapServer, FakeSmtpServer
from mailbridge.testing._autoconfig import client_config_xml

ZONES = {
    "acme.example": {"@": {"MX": "10 aspmx.l.google.com."}},
    "shop.example": {"autoconfig": {"A": "127.0.0.1"}, "@": {"MX": "10 mx.hoster.example."}},
    "srv.example": {
        "_submissions._tcp": {"SRV": "0 1 465 mail.srv.example."},
        "_submission._tcp": {"SRV": "0 0 0 ."},
        "_imaps._tcp": {"SRV": "0 1 993 imap.provider.example."},
    },
    "guess.example": {"smtp": {"A": "127.0.0.1"}, "imap": {"A": "127.0.0.1"}},
}


@pytest.fixture
def autoconfig() -> Iterator[FakeAutoconfigServer]:
    server = FakeAutoconfigServer()
    server.add_certificate_hostnames("autoconfig.shop.example", "shop.example")
    with server:
        yield server


def _fetcher(dns: FakeDnsServer, autoconfig: FakeAutoconfigServer | None = None) -> HttpsFetcher:
    if autoconfig is None:
        return HttpsFetcher(resolver=dns.resolver(timeout=0.5))
    return HttpsFetcher(
        resolver=dns.resolver(timeout=0.5),
        ssl_context=autoconfig.client_ssl_context(),
        port=autoconfig.port,
        allow_private=True,  # the fake server is on loopback
    )


@pytest.mark.dns_server(zones=ZONES)
def test_registry_by_domain(dns_server: FakeDnsServer) -> None:
    result = discover(
        "jane@gmail.com",
        resolver=dns_server.resolver(timeout=0.5),
        fetcher=_fetcher(dns_server),
        guess=False,
        timeout=5,
    )
    assert result.provider is not None and result.provider.id == "gmail"
    best = result.smtp[0]
    assert (best.host, best.source, best.trusted) == ("smtp.gmail.com", "registry", True)
    assert best.security is Security.IMPLICIT_TLS  # implicit TLS ranks first
    assert best.username == "jane@gmail.com"
    assert result.imap and result.imap[0].host == "imap.gmail.com"
    assert "Gmail" in str(result)


@pytest.mark.dns_server(zones=ZONES)
def test_custom_domain_recognised_by_mx(dns_server: FakeDnsServer) -> None:
    result = discover(
        "billing@acme.example",
        resolver=dns_server.resolver(timeout=0.5),
        fetcher=_fetcher(dns_server),
        guess=False,
        timeout=5,
    )
    assert result.provider is not None and result.provider.id == "google-workspace"
    best = result.smtp[0]
    assert best.source == "mx" and best.host == "smtp.gmail.com"
    assert "found via MX aspmx.l.google.com" in best.explanation
    assert not best.trusted  # plain DNS, not DNSSEC-authenticated


@pytest.mark.dns_server(zones=ZONES)
def test_autoconfig_document_over_https(
    dns_server: FakeDnsServer, autoconfig: FakeAutoconfigServer
) -> None:
    from mailbridge import SmtpSettings

    autoconfig.add_config(
        "shop.example",
        client_config_xml(
            "shop.example",
            smtp=SmtpSettings("mail.shop.example", 465, "implicit_tls"),
            imap=SmtpSettings("mail.shop.example", 993, "implicit_tls"),
        ).replace(
            "<outgoingServer",
            '<outgoingServer type="smtp"><hostname>plain.shop.example'
            "</hostname><port>25</port><socketType>plain</socketType></outgoingServer>"
            "<outgoingServer",
            1,
        ),
    )
    result = discover(
        "anna@shop.example",
        resolver=dns_server.resolver(timeout=0.5),
        fetcher=_fetcher(dns_server, autoconfig),
        guess=False,
        timeout=5,
        allow_private=True,  # the document names loopback-resolving test hosts
    )
    assert next((c.host, c.port, c.source, c.trusted) for c in result.smtp) == (
        "mail.shop.example",
        465,
        "autoconfig",
        True,
    )
    assert result.smtp[-1].security is Security.NONE  # plain ranks last
    assert result.imap[0].port == 993
    assert autoconfig.requests[0].query == {"emailaddress": ["anna@shop.example"]}


@pytest.mark.dns_server(zones=ZONES)
def test_srv_records(dns_server: FakeDnsServer) -> None:
    result = discover(
        "x@srv.example",
        resolver=dns_server.resolver(timeout=0.5),
        fetcher=_fetcher(dns_server),
        guess=False,
        timeout=5,
    )
    assert [(c.host, c.port, c.security) for c in result.smtp] == [
        ("mail.srv.example", 465, Security.IMPLICIT_TLS)
    ]  # "." means no STARTTLS service
    (imap,) = result.imap
    assert imap.host == "imap.provider.example" and not imap.trusted
    assert "outside the domain" in imap.explanation


@pytest.mark.dns_server(zones=ZONES)
def test_guessing_probes_common_names_with_verified_tls(dns_server: FakeDnsServer) -> None:
    names = ["smtp.guess.example", "mail.guess.example", "imap.guess.example"]
    with (
        FakeSmtpServer(tls="implicit", certificate_hostnames=names) as smtp,
        FakeImapServer(tls="implicit", certificate_hostnames=names) as imap,
    ):
        context = ssl.create_default_context(cafile=str(smtp.ca_file))
        context.load_verify_locations(cafile=str(imap.ca_file))
        result = discover(
            "x@guess.example",
            resolver=dns_server.resolver(timeout=0.5),
            fetcher=_fetcher(dns_server),
            timeout=5,
            tls_context=context,
            allow_private=True,  # the guessed names resolve to loopback
            guess_ports={
                "smtp": ((smtp.port, Security.IMPLICIT_TLS),),
                "imap": ((imap.port, Security.IMPLICIT_TLS),),
            },
        )
    assert [(c.host, c.source, c.trusted) for c in result.smtp] == [
        ("smtp.guess.example", "guess", False)
    ]
    assert [c.host for c in result.imap] == ["imap.guess.example"]


@pytest.mark.dns_server(zones=ZONES)
def test_nothing_found_is_an_empty_answer(dns_server: FakeDnsServer) -> None:
    result = discover(
        "x@nowhere.example",
        resolver=dns_server.resolver(timeout=0.3),
        fetcher=_fetcher(dns_server),
        timeout=3,
    )
    assert result.smtp == () and result.imap == ()
    assert {s.name for s in result.sources} >= {"registry", "mx", "autoconfig", "srv"}


@pytest.mark.dns_server(zones={"acme.example": {"@": {"MX": (120, "10 aspmx.l.google.com.")}}})
def test_results_are_cached_for_the_dns_ttl(dns_server: FakeDnsServer) -> None:
    from mailbridge.providers import DiscoveryCache

    now = [1000.0]
    cache = DiscoveryCache(clock=lambda: now[0])
    options = {
        "resolver": dns_server.resolver(timeout=0.5),
        "fetcher": _fetcher(dns_server),
        "guess": False,
        "timeout": 5,
        "cache": cache,
    }
    first = discover("billing@acme.example", **options)  # type: ignore[arg-type]
    dns_server.clear_queries()
    assert discover("billing@acme.example", **options) is first  # type: ignore[arg-type]
    assert dns_server.query_count == 0
    now[0] += 121  # the MX record's TTL has passed
    assert discover("billing@acme.example", **options) is not first  # type: ignore[arg-type]
    assert dns_server.query_count > 0


PRIVATE_ZONES = {
    "hostile.example": {
        "_submissions._tcp": {"SRV": "0 1 465 0x7f000001."},
        "_submission._tcp": {"SRV": "0 1 587 inside.hostile.example."},
        "_imaps._tcp": {"SRV": "0 1 993 2130706433."},
        "_imap._tcp": {"SRV": "0 1 143 mail.public.example."},
        "inside": {"A": "10.0.0.7"},
    },
    "guess.example": {"smtp": {"A": "127.0.0.1"}, "imap": {"A": "127.0.0.1"}},
    "shop.example": {"autoconfig": {"A": "127.0.0.1"}},
}


@pytest.mark.dns_server(zones=PRIVATE_ZONES)
def test_srv_targets_must_be_names_that_lead_outside(dns_server: FakeDnsServer) -> None:
    options = {"resolver": dns_server.resolver(timeout=0.5), "guess": False, "timeout": 3}
    result = discover("x@hostile.example", fetcher=_fetcher(dns_server), **options)  # type: ignore[arg-type]
    assert [c.host for c in result.smtp + result.imap] == ["mail.public.example"]
    allowed = discover(
        "x@hostile.example",
        fetcher=_fetcher(dns_server),
        allow_private=True,
        **options,  # type: ignore[arg-type]
    )
    # allow_private admits the internal name, never the numeric forms.
    assert sorted(c.host for c in allowed.smtp + allowed.imap) == [
        "inside.hostile.example",
        "mail.public.example",
    ]


@pytest.mark.dns_server(zones=PRIVATE_ZONES)
def test_guessing_never_knocks_on_internal_addresses(dns_server: FakeDnsServer) -> None:
    with FakeSmtpServer(tls="implicit") as smtp:
        result = discover(
            "x@guess.example",
            resolver=dns_server.resolver(timeout=0.5),
            fetcher=_fetcher(dns_server),
            timeout=3,
            guess_ports={
                "smtp": ((smtp.port, Security.IMPLICIT_TLS),),
                "imap": ((smtp.port, Security.IMPLICIT_TLS),),
            },
        )
        assert smtp.connections == 0
    assert result.smtp == () and result.imap == ()


@pytest.mark.dns_server(zones=PRIVATE_ZONES)
def test_autoconfig_is_not_fetched_from_internal_addresses(
    dns_server: FakeDnsServer, autoconfig: FakeAutoconfigServer
) -> None:
    autoconfig.add_config("shop.example", "<clientConfig/>")
    fetcher = HttpsFetcher(
        resolver=dns_server.resolver(timeout=0.5),
        ssl_context=autoconfig.client_ssl_context(),
        port=autoconfig.port,
    )  # allow_private is off by default
    discover("anna@shop.example", resolver=dns_server.resolver(timeout=0.5), fetcher=fetcher,
             guess=False, timeout=3)  # fmt: skip
    assert autoconfig.requests == []
    fetcher.allow_private = True
    assert fetcher.fetch("https://autoconfig.shop.example/x", 2) is None  # 404, but asked
    assert len(autoconfig.requests) == 1
