"""Autoconfig `<oAuth2>` blocks: parsed as hostile input, carried into discovery candidates,
and only trusted where the application would send refresh tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge import SmtpSettings
from mailbridge.providers import Candidate, HttpsFetcher, ProviderRegistry, discover
from mailbridge.providers._autoconfig import MAX_OAUTH2_SCOPES, parse_autoconfig
from mailbridge.testing import FakeAutoconfigServer, FakeDnsServer
from mailbridge.testing._autoconfig import client_config_xml

CORPUS = Path(__file__).parent / "autoconfig_corpus"
EMAIL = "jana.berg@kunde.example"
BIG = (CORPUS / "big_provider.xml").read_text()
TOKEN_URL = "https://login.postwerk.example/oauth2/token"
ZONES = {"shop.example": {"autoconfig": {"A": "127.0.0.1"}}}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(TOKEN_URL, "https://127.0.0.1/oauth2/token", id="ip-literal-token-url"),
        pytest.param(TOKEN_URL, "https://[::1]/token", id="ipv6-token-url"),
        pytest.param(TOKEN_URL, "https://user:pw@login.postwerk.example/t", id="userinfo"),
        pytest.param(TOKEN_URL, "https://login.postwerk.example/" + "t" * 3000, id="long-url"),
        pytest.param(TOKEN_URL, "https://login.post werk.example/t", id="space-in-host"),
        pytest.param(
            "<issuer>login.postwerk.example</issuer>", "<issuer>10.0.0.1</issuer>", id="ip-issuer"
        ),
        pytest.param(
            "<issuer>login.postwerk.example</issuer>",
            "<issuer>login\n.postwerk.example</issuer>",
            id="line-break-in-issuer",
        ),
        pytest.param(
            "<scope>https://mail.postwerk.example/ offline_access</scope>",
            "<scope>" + " ".join(f"s{i}" for i in range(MAX_OAUTH2_SCOPES + 1)) + "</scope>",
            id="too-many-scopes",
        ),
        pytest.param(
            "<scope>https://mail.postwerk.example/ offline_access</scope>",
            "<scope>" + "x" * 100_000 + "</scope>",
            id="huge-scope",
        ),
        pytest.param(
            "<scope>https://mail.postwerk.example/ offline_access</scope>",
            "<scope>   </scope>",
            id="no-scope",
        ),
    ],
)
def test_unsafe_oauth2_blocks_are_dropped_and_the_servers_kept(old: str, new: str) -> None:
    assert old in BIG
    candidates = parse_autoconfig(BIG.replace(old, new), EMAIL)
    assert len(candidates) == 4
    assert all(candidate.oauth2 is None for candidate in candidates)


def test_many_oauth2_blocks_cost_one_look_each() -> None:
    block = BIG[BIG.index("<oAuth2>") : BIG.index("</oAuth2>") + len("</oAuth2>")]
    hostile = block.replace(TOKEN_URL, "http://x.example/t")
    document = BIG.replace(block, hostile * 2000 + block)
    assert len(document) < 512 * 1024
    (first, *_) = parse_autoconfig(document, EMAIL)
    assert first.oauth2 is not None and first.oauth2.token_url == TOKEN_URL


@pytest.fixture
def autoconfig() -> Iterator[FakeAutoconfigServer]:
    server = FakeAutoconfigServer()
    server.add_certificate_hostnames("autoconfig.shop.example", "shop.example")
    with server:
        yield server


def _document(issuer: str, token_url: str) -> str:
    xml = client_config_xml("shop.example", smtp=SmtpSettings("mail.shop.example", 587, "starttls"))
    xml = xml.replace(
        "<authentication>password-cleartext</authentication>",
        "<authentication>OAuth2</authentication>"
        "<authentication>password-cleartext</authentication>",
    )
    return xml.replace(
        "</clientConfig>",
        f"<oAuth2><issuer>{issuer}</issuer><scope>mail offline_access</scope>"
        f"<authURL>https://{issuer}/authorize</authURL><tokenURL>{token_url}</tokenURL>"
        "</oAuth2></clientConfig>",
    )


def _discover(
    dns: FakeDnsServer, server: FakeAutoconfigServer, *, allow_http: bool = False
) -> list[Candidate]:
    fetcher = HttpsFetcher(
        resolver=dns.resolver(timeout=0.5),
        ssl_context=server.client_ssl_context() if server.tls else None,
        port=server.port,
        http_port=server.port,
        allow_private=True,
    )
    result = discover(
        "anna@shop.example",
        resolver=dns.resolver(timeout=0.5),
        fetcher=fetcher,
        guess=False,
        timeout=5,
        allow_private=True,
        allow_http=allow_http,
    )
    return list(result.smtp)


@pytest.mark.dns_server(zones=ZONES)
def test_a_trusted_document_brings_its_oauth2_endpoints(
    dns_server: FakeDnsServer, autoconfig: FakeAutoconfigServer
) -> None:
    autoconfig.add_config(
        "shop.example", _document("login.shop.example", "https://login.shop.example/token")
    )
    (candidate,) = _discover(dns_server, autoconfig)
    assert candidate.trusted and candidate.offers_oauth2
    oauth2 = candidate.oauth2
    assert (oauth2.issuer, oauth2.scopes) == ("login.shop.example", ("mail", "offline_access"))
    assert oauth2.token_url == "https://login.shop.example/token"
    assert oauth2.auth_url == "https://login.shop.example/authorize"
    assert candidate.smtp_settings("pw").host == "mail.shop.example"


@pytest.mark.dns_server(zones=ZONES)
def test_a_known_issuer_gets_the_provider_lists_endpoints(
    dns_server: FakeDnsServer, autoconfig: FakeAutoconfigServer
) -> None:
    autoconfig.add_config(
        "shop.example",
        _document("login.microsoftonline.com", "https://tokens.attacker.example/steal"),
    )
    (candidate,) = _discover(dns_server, autoconfig)
    microsoft = ProviderRegistry.default().by_id("microsoft365")
    assert microsoft is not None
    assert candidate.oauth2 == microsoft.oauth2


@pytest.mark.dns_server(zones=ZONES)
def test_an_untrusted_document_brings_no_token_endpoint(dns_server: FakeDnsServer) -> None:
    with FakeAutoconfigServer(tls=False) as plain:
        plain.add_config(
            "shop.example", _document("login.shop.example", "https://login.shop.example/token")
        )
        (candidate,) = _discover(dns_server, plain, allow_http=True)
    assert not candidate.trusted
    assert candidate.oauth2 is None
    assert not candidate.offers_oauth2
