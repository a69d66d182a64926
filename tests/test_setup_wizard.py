"""setup(): discover, then prove the candidates with a real login."""

from __future__ import annotations

import socket
import ssl

import pytest

from mailbridge import Category, Security
from mailbridge.providers import Endpoint, HttpsFetcher, Provider, ProviderRegistry
from mailbridge.providers._wizard import setup
from mailbridge.testing import FakeAutoconfigServer, FakeDnsServer, FakeImapServer, FakeSmtpServer

EMAIL, PASSWORD = "anna@shop.example", "anna-pw"


def _trusting(*servers: object) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for server in servers:
        context.load_verify_locations(cafile=str(server.ca_file))  # type: ignore[attr-defined]
    return context


@pytest.mark.dns_server(zones={"shop.example": {"autoconfig": {"A": "127.0.0.1"}}})
def test_wizard_finds_and_proves_smtp_and_imap(dns_server: FakeDnsServer) -> None:
    with (
        FakeSmtpServer(tls="implicit", users={EMAIL: PASSWORD}) as smtp,
        FakeImapServer(tls="implicit", users={EMAIL: PASSWORD}) as imap,
        FakeAutoconfigServer(certificate_hostnames=["autoconfig.shop.example"]) as autoconfig,
    ):
        autoconfig.add_config(
            "shop.example",
            f"""<clientConfig version="1.1">
  <emailProvider id="shop.example"><domain>shop.example</domain>
    <incomingServer type="imap"><hostname>localhost</hostname><port>{imap.port}</port>
      <socketType>SSL</socketType><username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication></incomingServer>
    <outgoingServer type="smtp"><hostname>localhost</hostname><port>{smtp.port}</port>
      <socketType>SSL</socketType><username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication></outgoingServer>
  </emailProvider></clientConfig>""",
        )
        fetcher = HttpsFetcher(
            resolver=dns_server.resolver(timeout=0.5),
            ssl_context=autoconfig.client_ssl_context(),
            port=autoconfig.port,
            allow_private=True,
        )
        result = setup(
            EMAIL,
            PASSWORD,
            resolver=dns_server.resolver(timeout=0.5),
            fetcher=fetcher,
            guess=False,
            timeout=5,
            ssl_context=_trusting(smtp, imap),
            allow_private=True,  # the test servers are on loopback
            command_timeout=3,
        )
    assert result.ok, str(result)
    assert result.smtp is not None and result.smtp.port == smtp.port
    assert result.smtp.security is Security.IMPLICIT_TLS and result.smtp.username == EMAIL
    assert result.imap is not None and result.imap.port == imap.port
    assert [a.report.ok for a in result.attempts] == [True, True]
    assert "works" in str(result)
    with result.client(display_name="Anna's Shop") as client:
        assert client.imap == result.imap


@pytest.mark.dns_server(zones={"acme.example": {}})
def test_wrong_password_gets_the_providers_advice(dns_server: FakeDnsServer) -> None:
    with FakeSmtpServer(tls="implicit", users={"x@acme.example": "right"}) as smtp:
        smtp.login_reply = "534 5.7.9 Application-specific password required."
        provider = Provider(
            id="acme-mail",
            name="Acme Mail",
            domains=("acme.example",),
            smtp=(Endpoint("localhost", smtp.port, Security.IMPLICIT_TLS),),
            auth=("app_password",),
            hints=("Acme Mail needs an app password.",),
            docs={"app_passwords": "https://help.acme-mail.example/app-passwords"},
        )
        registry = ProviderRegistry.default().register(provider)
        result = setup(
            "x@acme.example",
            "wrong",
            want_imap=False,
            registry=registry,
            resolver=dns_server.resolver(timeout=0.5),
            guess=False,
            timeout=3,
            ssl_context=_trusting(smtp),
            allow_private=True,
            command_timeout=3,
        )
    assert not result.ok and result.smtp is None
    assert result.provider is not None and result.provider.id == "acme-mail"
    diagnosis = result.diagnosis
    assert diagnosis is not None and diagnosis.category == Category.APP_PASSWORD_REQUIRED
    assert diagnosis.summary.startswith("Acme Mail:")
    assert "https://help.acme-mail.example/app-passwords" in str(diagnosis)


@pytest.mark.dns_server(zones={"nothing.example": {}})
def test_nothing_found(dns_server: FakeDnsServer) -> None:
    result = setup(
        "x@nothing.example",
        "pw",
        resolver=dns_server.resolver(timeout=0.3),
        fetcher=HttpsFetcher(resolver=dns_server.resolver(timeout=0.3)),
        timeout=2,
    )
    assert not result.ok and result.attempts == ()
    assert result.diagnosis is not None
    assert result.diagnosis.category == Category.HOST_NOT_FOUND


@pytest.mark.dns_server(
    zones={"evil.example": {"_submissions._tcp": {"SRV": "0 1 465 localhost."}}}
)
def test_password_never_goes_to_untrusted_or_internal_candidates(
    dns_server: FakeDnsServer,
) -> None:
    with FakeSmtpServer(tls="implicit", users={"x@evil.example": "pw"}) as smtp:
        result = setup(
            "x@evil.example",
            "pw",
            want_imap=False,
            guess=False,
            timeout=3,
            resolver=dns_server.resolver(timeout=0.5),
            fetcher=HttpsFetcher(resolver=dns_server.resolver(timeout=0.5)),
            ssl_context=_trusting(smtp),
            allow_private=True,  # so that only trust decides
        )
        assert smtp.connections == 0  # nothing was tried: the SRV answer is not trusted
        assert not result.ok and result.attempts == ()
        assert result.diagnosis is not None
        assert "unconfirmed" in result.diagnosis.summary
        trusted_but_internal = setup(
            "x@evil.example",
            "pw",
            want_imap=False,
            guess=False,
            timeout=3,
            resolver=dns_server.resolver(timeout=0.5),
            try_untrusted=True,
            fetcher=HttpsFetcher(resolver=dns_server.resolver(timeout=0.5)),
            ssl_context=_trusting(smtp),
        )
        assert smtp.connections == 0  # localhost is internal: refused without allow_private
        assert trusted_but_internal.attempts == ()
        assert trusted_but_internal.discovery.smtp == ()  # discovery dropped it already


def _autoconfig_xml(host: str, smtp_port: int, imap_port: int) -> str:
    return f"""<clientConfig version="1.1">
  <emailProvider id="shop.example"><domain>shop.example</domain>
    <incomingServer type="imap"><hostname>{host}</hostname><port>{imap_port}</port>
      <socketType>SSL</socketType><username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication></incomingServer>
    <outgoingServer type="smtp"><hostname>{host}</hostname><port>{smtp_port}</port>
      <socketType>SSL</socketType><username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication></outgoingServer>
  </emailProvider></clientConfig>"""


# What getaddrinfo reads as 127.0.0.1 or 169.254.169.254 although DNS has no such name.
NUMERIC_FORMS = [
    "0x7f000001",
    "0xa9fea9fe",
    "0x7f.0x0.0x0.0x1",
    "2130706433",
    "0177.0.0.1",
    "127.1",
    "127.0.0.1",  # a plain literal is a host, but an internal one
]


@pytest.mark.parametrize("host", NUMERIC_FORMS)
@pytest.mark.dns_server(zones={"shop.example": {"autoconfig": {"A": "127.0.0.1"}}})
def test_numeric_host_forms_in_a_trusted_document_reach_nothing(
    dns_server: FakeDnsServer, host: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # where the login would land
    port = listener.getsockname()[1]
    try:
        with FakeAutoconfigServer(certificate_hostnames=["autoconfig.shop.example"]) as server:
            server.add_config("shop.example", _autoconfig_xml(host, port, port))
            result = setup(
                EMAIL,
                PASSWORD,
                resolver=dns_server.resolver(timeout=0.5),
                fetcher=HttpsFetcher(
                    resolver=dns_server.resolver(timeout=0.5),
                    ssl_context=server.client_ssl_context(),
                    port=server.port,
                    allow_private=True,  # the autoconfig server itself is the test's
                ),
                guess=False,
                timeout=3,
                connect_timeout=1,
                command_timeout=1,
            )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert result.attempts == () and not result.ok
    assert result.discovery.smtp == () and result.discovery.imap == ()


@pytest.mark.dns_server(
    zones={"shop.example": {"autoconfig": {"A": "127.0.0.1"}, "mail": {"A": "127.0.0.1"}}}
)
def test_wizard_connects_to_the_address_it_checked(dns_server: FakeDnsServer) -> None:
    # mail.shop.example exists only in the test's DNS, not for getaddrinfo: the login
    # works only if the connection goes to the address resolved (and checked) once.
    names = ["mail.shop.example"]
    with (
        FakeSmtpServer(
            tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=names
        ) as smtp,
        FakeImapServer(
            tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=names
        ) as imap,
        FakeAutoconfigServer(certificate_hostnames=["autoconfig.shop.example"]) as autoconfig,
    ):
        autoconfig.add_config(
            "shop.example", _autoconfig_xml("mail.shop.example", smtp.port, imap.port)
        )
        result = setup(
            EMAIL,
            PASSWORD,
            resolver=dns_server.resolver(timeout=0.5),
            fetcher=HttpsFetcher(
                resolver=dns_server.resolver(timeout=0.5),
                ssl_context=autoconfig.client_ssl_context(),
                port=autoconfig.port,
                allow_private=True,
            ),
            guess=False,
            timeout=5,
            ssl_context=_trusting(smtp, imap),
            allow_private=True,
            command_timeout=3,
        )
        assert result.ok, str(result)
        assert result.smtp is not None and result.smtp.host == "mail.shop.example"
        assert result.imap is not None and result.imap.host == "mail.shop.example"


@pytest.mark.dns_server(
    zones={"shop.example": {"autoconfig": {"A": "127.0.0.1"}, "mail": {"A": "127.0.0.1"}}}
)
def test_the_certificate_must_name_the_host_not_the_address(dns_server: FakeDnsServer) -> None:
    # The server's certificate names 127.0.0.1 (the address connected to), not the host.
    with (
        FakeSmtpServer(tls="implicit", users={EMAIL: PASSWORD}) as smtp,
        FakeAutoconfigServer(certificate_hostnames=["autoconfig.shop.example"]) as autoconfig,
    ):
        autoconfig.add_config(
            "shop.example", _autoconfig_xml("mail.shop.example", smtp.port, smtp.port)
        )
        result = setup(
            EMAIL,
            PASSWORD,
            want_imap=False,
            resolver=dns_server.resolver(timeout=0.5),
            fetcher=HttpsFetcher(
                resolver=dns_server.resolver(timeout=0.5),
                ssl_context=autoconfig.client_ssl_context(),
                port=autoconfig.port,
                allow_private=True,
            ),
            guess=False,
            timeout=5,
            ssl_context=_trusting(smtp),
            allow_private=True,
            command_timeout=3,
        )
        assert smtp.messages == [] and not result.ok
    (attempt,) = result.attempts
    assert attempt.candidate.host == "mail.shop.example"
    assert [step.name for step in attempt.report.steps if not step.ok] == ["tls"]
