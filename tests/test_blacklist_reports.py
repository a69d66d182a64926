"""Blacklists in `test_connection()` (sync and async) and `mailbridge blacklist check`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from mailbridge import (
    AsyncDeliveryClient,
    BlacklistLookupFailed,
    ConfigurationError,
    DeliveryClient,
)
from mailbridge._addresses import parse_mailbox
from mailbridge._identity import OwnIdentity, PlatformRelay
from mailbridge.cli import main
from mailbridge.deliverability import DEFAULT_BLACKLISTS, Blacklist, BlacklistCheck, ListStatus
from mailbridge.smtp.probe import probe_smtp
from mailbridge.testing import FakeDnsServer, FakeSmtpServer

from .conftest import USER

TEST_ENTRY = {"2.0.0.127": {"A": "127.0.0.2"}}
BL = Blacklist(name="Test BL", zone="bl.test")
KEY = "k3y0123456789abcdefghijklm"


@pytest.fixture
def dns() -> Iterator[FakeDnsServer]:
    zones = {
        "bl.test": {**TEST_ENTRY, "9.2.0.192": {"A": "127.0.0.2", "TXT": '"trap hits"'}},
        "blocked.test": {"2.0.0.127": {"A": "127.255.255.254"}},
        "hosts.test": {"mail": {"A": "192.0.2.9"}},
        "localhost": {"@": {"A": "192.0.2.9"}},
        **{b.zone: TEST_ENTRY for b in DEFAULT_BLACKLISTS[1:]},
        f"{KEY}.zen.dq.spamhaus.net": {**TEST_ENTRY, "9.2.0.192": {"A": "127.0.0.2"}},
    }
    with FakeDnsServer(zones) as server:
        yield server


def _relay(smtp_server: FakeSmtpServer, *ips: str) -> PlatformRelay:
    return PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        sending_ips=ips,
    )


def test_a_connection_test_checks_the_relays_sending_ips_on_request(
    smtp_server: FakeSmtpServer, dns: FakeDnsServer
) -> None:
    relay = _relay(smtp_server, "192.0.2.9", "192.0.2.8")
    check = BlacklistCheck(resolver=dns.resolver(), lists=(BL,), timeout=3)
    with DeliveryClient.relay("billing@acme.example", relay) as client:
        plain = client.test_connection()
        assert plain.blacklists is None and dns.query_count == 0
        report = client.test_connection(blacklists=check)
    assert report.ok  # the connection works; the listing is reported beside it
    assert report.blacklists is not None and not report.blacklists.ok
    assert report.blacklists.addresses == ("192.0.2.9", "192.0.2.8")
    assert [r.status for r in report.blacklists.results] == [ListStatus.LISTED, ListStatus.CLEAN]
    text = str(report)
    assert "The connection works." in text and "192.0.2.9 is on the blacklist Test BL" in text
    assert "trap hits" in text and "ask for removal" in text


def test_own_smtp_checks_its_server_and_reports_a_blocked_resolver_plainly(
    smtp_server: FakeSmtpServer, dns: FakeDnsServer
) -> None:
    blocked = Blacklist(name="Blocked", zone="blocked.test", error_network="127.255.255.0/24")
    check = BlacklistCheck(resolver=dns.resolver(), lists=(BL, blocked), timeout=3)
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        report = client.test_connection(blacklists=check)
    assert report.blacklists is not None and report.blacklists.target == "127.0.0.1"
    assert report.blacklists.ok and not report.blacklists.complete
    assert "your DNS resolver is blocked by Blocked" in str(report)
    assert "Listed on" not in str(report)


def test_a_target_without_address_is_reported_not_raised(
    smtp_server: FakeSmtpServer, dns: FakeDnsServer
) -> None:
    settings = smtp_server.smtp_settings()
    client = DeliveryClient(
        identity=OwnIdentity(parse_mailbox("sender", USER), None),
        transport=DeliveryClient.own_smtp(USER, settings).transport,
        connection_test=lambda: probe_smtp(settings),
        blacklist_targets=("nothing.hosts.test",),
    )
    with client:
        report = client.test_connection(
            blacklists=BlacklistCheck(resolver=dns.resolver(), lists=(BL,), timeout=3)
        )
    assert report.blacklists is not None
    assert isinstance(report.blacklists.error, BlacklistLookupFailed)
    assert report.blacklists.ok and not report.blacklists.complete
    assert "Nothing could be checked" in str(report) and "Check the spelling" in str(report)


def test_blacklists_must_be_a_flag_or_a_check(smtp_server: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(ConfigurationError, match="blacklists"):
            client.test_connection(blacklists="yes")  # type: ignore[arg-type]
    assert smtp_server.connections == 0  # refused before connecting


def test_the_async_client_checks_blacklists_too(
    smtp_server: FakeSmtpServer, dns: FakeDnsServer
) -> None:
    relay = _relay(smtp_server, "192.0.2.9")
    check = BlacklistCheck(resolver=dns.resolver(), lists=(BL,), timeout=3)

    async def run() -> None:
        async with AsyncDeliveryClient.relay("billing@acme.example", relay) as client:
            assert (await client.test_connection()).blacklists is None
            report = await client.test_connection(blacklists=check)
        assert report.ok and report.blacklists is not None
        assert [r.status for r in report.blacklists.results] == [ListStatus.LISTED]

    asyncio.run(run())


def _cli(dns: FakeDnsServer, *argv: str) -> int:
    common = ["--nameserver", "127.0.0.1", "--dns-port", str(dns.port), "--timeout", "3"]
    return main(["blacklist", "check", *argv, *common])


def test_cli_exit_codes(dns: FakeDnsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(dns, "192.0.2.8", "--list", "bl.test") == 0
    assert "CLEAN" in capsys.readouterr().out
    assert _cli(dns, "mail.hosts.test", "--list", "bl.test") == 1
    out = capsys.readouterr().out
    assert "LISTED" in out and "192.0.2.9" in out
    assert _cli(dns, "192.0.2.8", "--list", "bl.test", "--list", "silent.test") == 4
    assert "could not be checked" in capsys.readouterr().out
    assert _cli(dns, "nothing.hosts.test", "--list", "bl.test") == 4
    assert "has no IP address" in capsys.readouterr().err
    assert _cli(dns, "not..a host", "--list", "bl.test") == 2
    assert "ip_or_host" in capsys.readouterr().err
    assert _cli(dns, "192.0.2.8", "--list", "not a zone") == 2
    err = capsys.readouterr().err
    assert "zone" in err and "Traceback" not in err


def test_cli_json(dns: FakeDnsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(dns, "192.0.2.9", "--list", "bl.test", "--json") == 1
    data = json.loads(capsys.readouterr().out)
    (result,) = data["results"]
    assert result["status"] == "listed" and result["codes"] == ["127.0.0.2"]
    assert result["reason"] == "trap hits" and "removal" in result["advice"]


def test_cli_default_lists_with_a_dqs_key_from_the_environment(
    dns: FakeDnsServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DQS_KEY", KEY)
    assert _cli(dns, "192.0.2.9", "--dqs-key-env", "TEST_DQS_KEY") == 1
    captured = capsys.readouterr()
    assert "Spamhaus ZEN (<key>.zen.dq.spamhaus.net)" in captured.out
    assert KEY not in captured.out + captured.err
    monkeypatch.delenv("TEST_DQS_KEY")
    assert _cli(dns, "192.0.2.9", "--dqs-key-env", "TEST_DQS_KEY") == 2
    assert "TEST_DQS_KEY is not set" in capsys.readouterr().err


def test_cli_list_of_a_known_zone_keeps_its_error_codes(capsys: pytest.CaptureFixture[str]) -> None:
    blocked = {"A": "127.255.255.254"}  # Spamhaus: "your resolver is blocked"
    zones = {"zen.spamhaus.org": {"2.0.0.127": blocked, "8.2.0.192": blocked}}
    with FakeDnsServer(zones) as server:
        assert _cli(server, "192.0.2.8", "--list", "zen.spamhaus.org") == 4  # not 1: listed
    out = capsys.readouterr().out
    assert "LISTED" not in out and "Spamhaus ZEN" in out and "127.255.255.254" in out


def test_a_zone_written_with_its_final_dot_is_asked(
    dns: FakeDnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Blacklist(name="Test BL", zone="bl.test.").zone == "bl.test"
    assert _cli(dns, "192.0.2.9", "--list", "bl.test.") == 1  # was an EmptyLabel error
    assert "LISTED" in capsys.readouterr().out


def _test_connection(smtp_server: FakeSmtpServer, dns: FakeDnsServer, *argv: str) -> int:
    server = ["--port", str(smtp_server.port), "--ca-file", str(smtp_server.ca_file)]
    common = ["--nameserver", "127.0.0.1", "--dns-port", str(dns.port), "--timeout", "3"]
    return main(["test-connection", *server, *common, *argv])


def test_cli_test_connection_checks_blacklists_on_request(
    smtp_server: FakeSmtpServer, dns: FakeDnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _test_connection(smtp_server, dns, "--host", "127.0.0.1") == 0
    assert "Blacklist" not in capsys.readouterr().out and dns.query_count == 0
    assert _test_connection(smtp_server, dns, "--host", "127.0.0.1", "--list", "bl.test") == 0
    out = capsys.readouterr().out
    assert "The connection works." in out and "Not listed on any of 1 list checked." in out
    # the SMTP host's addresses are looked up through --nameserver: listed there
    code = _test_connection(smtp_server, dns, "--host", "localhost", "--list", "bl.test")
    out = capsys.readouterr().out
    assert code == 1 and "The connection works." in out and "LISTED" in out
    code = _test_connection(
        smtp_server, dns, "--host", "127.0.0.1", "--list", "bl.test", "--list", "silent.test"
    )
    assert code == 4 and "could not be checked" in capsys.readouterr().out


def test_cli_test_connection_blacklist_failures_are_explained(
    smtp_server: FakeSmtpServer,
    dns: FakeDnsServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a host without an address: the connection fails (1), the check says why, no traceback
    code = _test_connection(smtp_server, dns, "--host", "nothing.hosts.test", "--blacklists")
    captured = capsys.readouterr()
    assert code == 1 and "Nothing could be checked" in captured.out
    assert "Traceback" not in captured.out + captured.err
    # the DQS key comes from the environment, is checked before connecting, never shown
    connections = smtp_server.connections
    assert _test_connection(smtp_server, dns, "--host", "127.0.0.1", "--dqs-key-env", "NO_KEY") == 2
    assert "NO_KEY is not set" in capsys.readouterr().err
    assert smtp_server.connections == connections
    monkeypatch.setenv("TEST_DQS_KEY", KEY)
    with_key = ["--host", "127.0.0.1", "--dqs-key-env", "TEST_DQS_KEY"]
    code = _test_connection(smtp_server, dns, *with_key)
    captured = capsys.readouterr()
    assert code == 0 and "Spamhaus ZEN (<key>.zen.dq.spamhaus.net)" in captured.out
    assert KEY not in captured.out + captured.err
