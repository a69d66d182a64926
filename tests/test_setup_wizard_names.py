"""The wizard connects to an address it checked, but its texts name the host the tenant
typed or discovery found (with the address in parentheses): diagnoses, step texts and the
login advice, for SMTP and IMAP alike."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl

import pytest

from mailbridge import Category, Security
from mailbridge._pinning import pinned
from mailbridge.imap._probe import probe_imap
from mailbridge.providers import Endpoint, Provider, ProviderRegistry
from mailbridge.providers._wizard import SetupResult, setup
from mailbridge.settings import ImapSettings, SmtpSettings
from mailbridge.smtp._async_probe import probe_smtp_async
from mailbridge.smtp.probe import probe_smtp
from mailbridge.testing import FakeDnsServer, FakeImapServer, FakeSmtpServer

EMAIL, PASSWORD = "anna@shop.example", "anna-pw"
HOST = "mail.shop.example"  # only the test's DNS knows it: 127.0.0.1
ZONES = {"shop.example": {"mail": {"A": "127.0.0.1"}}}
BARE_ADDRESS = re.compile(r"(?<![(\w.])127\.0\.0\.1(?!\))")  # the address, not "(127.0.0.1)"


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


@pytest.fixture
def closed_ports() -> tuple[int, int]:
    return _closed_port(), _closed_port()


def _trusting(*servers: FakeSmtpServer | FakeImapServer) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for server in servers:
        context.load_verify_locations(cafile=str(server.ca_file))
    return context


def _setup(
    dns: FakeDnsServer,
    smtp_port: int,
    imap_port: int,
    context: ssl.SSLContext | None = None,
    host: str = HOST,
) -> SetupResult:
    provider = Provider(
        id="shop",
        name="Shop Mail",
        domains=("shop.example",),
        smtp=(Endpoint(host, smtp_port, Security.IMPLICIT_TLS),),
        imap=(Endpoint(host, imap_port, Security.IMPLICIT_TLS),),
    )
    return setup(
        EMAIL,
        PASSWORD,
        registry=ProviderRegistry.default().register(provider),
        resolver=dns.resolver(timeout=0.5),
        guess=False,
        timeout=3,
        ssl_context=context or ssl.create_default_context(),
        allow_private=True,  # the test servers are on loopback
        connect_timeout=3,
        command_timeout=3,
    )


def _texts(result: SetupResult) -> list[str]:
    """Every text the tenant may see: the result, each attempt's steps and diagnosis."""
    texts = [str(result)]
    for attempt in result.attempts:
        report = attempt.report
        texts += [f"{step.name}: {step.detail}" for step in report.steps]
        if report.diagnosis is not None:
            texts.append(str(report.diagnosis))
        if report.error is not None:
            texts.append(str(report.error))
    return texts


def _names_the_host(texts: list[str]) -> None:
    for text in texts:
        assert not BARE_ADDRESS.search(text), text


@pytest.mark.dns_server(zones=ZONES)
def test_nothing_listening_names_the_host_for_smtp_and_imap(
    dns_server: FakeDnsServer, closed_ports: tuple[int, int]
) -> None:
    smtp_port, imap_port = closed_ports
    result = _setup(dns_server, smtp_port, imap_port)
    assert [a.candidate.protocol for a in result.attempts] == ["smtp", "imap"]
    for attempt, port in zip(result.attempts, closed_ports, strict=True):
        diagnosis = attempt.report.diagnosis
        assert diagnosis is not None and diagnosis.category == Category.CONNECTION_REFUSED
        assert f"{HOST}:{port} (127.0.0.1)" in diagnosis.summary
        assert f"{HOST}:{port} (127.0.0.1)" in str(attempt.report.error)
    assert result.diagnosis is not None and HOST in result.diagnosis.summary
    _names_the_host(_texts(result))


@pytest.mark.dns_server(zones=ZONES)
def test_imap_refused_after_smtp_worked_names_the_host(
    dns_server: FakeDnsServer, closed_ports: tuple[int, int]
) -> None:
    with FakeSmtpServer(tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=[HOST]) as s:
        result = _setup(dns_server, s.port, closed_ports[1], _trusting(s))
    assert result.smtp is not None and result.imap is None
    smtp_attempt, imap_attempt = result.attempts
    connect = next(step for step in smtp_attempt.report.steps if step.name == "connect")
    assert connect.detail == f"{HOST}:{s.port} (127.0.0.1)"
    diagnosis = imap_attempt.report.diagnosis
    assert diagnosis is not None and f"{HOST}:{closed_ports[1]} (127.0.0.1)" in diagnosis.summary
    assert result.diagnosis is not None and HOST in result.diagnosis.summary
    _names_the_host(_texts(result))


@pytest.mark.dns_server(zones=ZONES)
def test_a_certificate_for_another_name_names_the_host(dns_server: FakeDnsServer) -> None:
    # The certificates name 127.0.0.1, the address connected to: not the host.
    with (
        FakeSmtpServer(tls="implicit", users={EMAIL: PASSWORD}) as smtp,
        FakeImapServer(tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=[HOST]) as i,
    ):
        result = _setup(dns_server, smtp.port, i.port, _trusting(smtp, i))
    smtp_attempt = result.attempts[0]
    diagnosis = smtp_attempt.report.diagnosis
    assert diagnosis is not None and diagnosis.category == Category.CERTIFICATE_NAME_MISMATCH
    assert HOST in diagnosis.summary and HOST in str(smtp_attempt.report.error)
    _names_the_host(_texts(result))


@pytest.mark.dns_server(zones=ZONES)
def test_imap_connect_step_names_the_host(dns_server: FakeDnsServer) -> None:
    names = [HOST]
    with (
        FakeSmtpServer(tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=names) as s,
        FakeImapServer(tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=names) as i,
    ):
        result = _setup(dns_server, s.port, i.port, _trusting(s, i))
    assert result.ok, str(result)
    imap_attempt = result.attempts[1]
    connect = next(step for step in imap_attempt.report.steps if step.name == "connect")
    assert connect.detail == f"{HOST}:{i.port} (127.0.0.1)"
    assert result.smtp is not None and result.smtp.host == HOST  # the settings keep the name
    _names_the_host(_texts(result))


@pytest.mark.dns_server(zones={"office365.com": {"smtp": {"A": "127.0.0.1"}}})
def test_the_login_advice_knows_the_provider_by_the_host_name(dns_server: FakeDnsServer) -> None:
    host = "smtp.office365.com"
    with FakeSmtpServer(
        tls="implicit", users={EMAIL: "other"}, certificate_hostnames=[host]
    ) as smtp:
        smtp.login_reply = "535 5.7.3 Authentication unsuccessful"
        result = _setup(dns_server, smtp.port, smtp.port, _trusting(smtp), host=host)
    diagnosis = result.attempts[0].report.diagnosis
    assert diagnosis is not None and diagnosis.summary.startswith("Microsoft 365 refused"), str(
        diagnosis
    )


def test_the_async_probe_of_pinned_settings_names_the_host() -> None:
    port = _closed_port()
    settings = pinned(SmtpSettings(HOST, port, "starttls", connect_timeout=3), "127.0.0.1")
    report = asyncio.run(probe_smtp_async(settings, try_alternative=False))
    assert report.diagnosis is not None
    assert f"{HOST}:{port} (127.0.0.1)" in report.diagnosis.summary
    assert report.steps[0].name == "resolve" and report.steps[0].detail == f"{HOST} (127.0.0.1)"
    assert not any(BARE_ADDRESS.search(step.detail) for step in report.steps)


TOKEN = "ya29.anna"


def test_oauthbearer_sends_the_host_name_not_the_pinned_address() -> None:
    """RFC 7628 3.1: host= is the name the client connected to; the wizard's pinned
    settings connect to 127.0.0.1 but the server is HOST (sync, async SMTP and IMAP)."""
    tokens, names = {EMAIL: TOKEN}, [HOST]
    with (
        FakeSmtpServer(tls="implicit", tokens=tokens, certificate_hostnames=names) as s,
        FakeImapServer(tls="implicit", users={}, tokens=tokens, certificate_hostnames=names) as i,
    ):
        context = _trusting(s, i)
        oauth = {"username": EMAIL, "oauth2_token": lambda: TOKEN, "ssl_context": context}
        smtp = SmtpSettings(HOST, s.port, "implicit_tls", auth_mechanism="OAUTHBEARER", **oauth)
        smtp = pinned(smtp, "127.0.0.1")
        imap = pinned(ImapSettings(HOST, i.port, "implicit_tls", **oauth), "127.0.0.1")
        reports = [
            probe_smtp(smtp, try_alternative=False),
            asyncio.run(probe_smtp_async(smtp, try_alternative=False)),
            probe_imap(imap, try_alternative=False),
        ]
    assert [report.ok for report in reports] == [True, True, True], [str(r) for r in reports]
    assert s.oauth_hosts == [HOST, HOST]
    assert i.oauth_hosts == [HOST]


def test_settings_with_a_ca_file_can_be_pinned() -> None:
    # Pinning moves the trust into the pinned context: a ca_file beside it was refused
    # ("give either ca_file or ssl_context, not both").
    with FakeSmtpServer(tls="implicit", users={EMAIL: PASSWORD}, certificate_hostnames=[HOST]) as s:
        settings = s.smtp_settings(host=HOST, connect_timeout=3)  # trusts the server's ca_file
        assert settings.ca_file is not None
        report = probe_smtp(pinned(settings, "127.0.0.1"), try_alternative=False)
    assert report.ok, report.diagnosis
