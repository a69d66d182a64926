"""check_blacklists() and `mailbridge blacklist check` against a real DNS server (dnsmasq)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailbridge import BlacklistQueryRefused
from mailbridge.cli import main
from mailbridge.deliverability import Blacklist, ListStatus, check_blacklists
from mailbridge.testing._realdns import RealDnsServer, dnsmasq_availability

from .conftest import require

pytestmark = pytest.mark.realserver

RECORDS = [
    "host-record=2.0.0.127.bl.test,127.0.0.2",
    "host-record=9.2.0.192.bl.test,127.0.0.3",
    'txt-record=9.2.0.192.bl.test,"Listed by bl.test: spam trap hits"',
    "host-record=2.0.0.127.blocked.test,127.255.255.254",
    "host-record=mail.hosts.test,192.0.2.8",
    "host-record=mail.hosts.test,192.0.2.9",
]
BL = Blacklist(name="Test BL", zone="bl.test", codes={"127.0.0.3": "spam trap hits"})
BLOCKED = Blacklist(name="Blocked BL", zone="blocked.test", error_network="127.255.255.0/24")


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[RealDnsServer]:
    require(dnsmasq_availability(), "real-DNS")
    with RealDnsServer(["bl.test", "blocked.test", "hosts.test"], RECORDS) as server:
        yield server


def test_listed_clean_and_refused_against_dnsmasq(dnsmasq: RealDnsServer) -> None:
    report = check_blacklists(
        "mail.hosts.test", resolver=dnsmasq.resolver(), lists=[BL, BLOCKED], timeout=5
    )
    got = {(r.address, r.list_name): r.status for r in report.results}
    assert got == {
        ("192.0.2.8", "Test BL"): ListStatus.CLEAN,
        ("192.0.2.9", "Test BL"): ListStatus.LISTED,
        ("192.0.2.8", "Blocked BL"): ListStatus.ERROR,
        ("192.0.2.9", "Blocked BL"): ListStatus.ERROR,
    }
    (listed,) = report.listed
    assert listed.codes == ("127.0.0.3",) and listed.reason == "Listed by bl.test: spam trap hits"
    assert all(isinstance(r.error, BlacklistQueryRefused) for r in report.errors)


def test_the_cli_against_dnsmasq(
    dnsmasq: RealDnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--nameserver", "127.0.0.1", "--dns-port", str(dnsmasq.port), "--timeout", "5"]
    assert main(["blacklist", "check", "192.0.2.9", "--list", "bl.test", *common]) == 1
    assert "LISTED" in capsys.readouterr().out
    assert main(["blacklist", "check", "192.0.2.8", "--list", "bl.test", *common]) == 0
    assert "Not listed on any of 1 list checked." in capsys.readouterr().out
    # a host name without addresses: nothing could be checked
    assert main(["blacklist", "check", "nothing.hosts.test", "--list", "bl.test", *common]) == 4
    assert "has no IP address" in capsys.readouterr().err
