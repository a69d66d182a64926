"""check_host() against a real DNS server (dnsmasq) on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailbridge.dnsauth import SpfVerdict, check_host
from mailbridge.testing._realdns import RealDnsServer, dnsmasq_availability

from .conftest import require

pytestmark = pytest.mark.realserver

RECORDS = [
    # tenant.example: authorises the platform through an include, as the design asks
    'txt-record=tenant.example,"v=spf1 mx include:spf.app.example ~all"',
    "mx-host=tenant.example,mx.tenant.example,10",
    "host-record=mx.tenant.example,198.51.100.25",
    'txt-record=spf.app.example,"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:a::/48 -all"',
    # strict.example: fails with an explanation
    'txt-record=strict.example,"v=spf1 a:mail.strict.example -all exp=why.strict.example"',
    "host-record=mail.strict.example,203.0.113.5",
    'txt-record=why.strict.example,"%{i} may not send for %{d}"',
    # twice.example: two SPF records
    'txt-record=twice.example,"v=spf1 -all"',
    'txt-record=twice.example,"v=spf1 +all"',
    # voids.example: too many lookups that find nothing
    'txt-record=voids.example,"v=spf1 a:x1.voids.example a:x2.voids.example a:x3.voids.example'
    ' +all"',
    # ptr.example: ptr with forward confirmation
    'txt-record=ptr.example,"v=spf1 ptr -all"',
    "host-record=host.ptr.example,192.0.2.77",
    "ptr-record=77.2.0.192.in-addr.arpa,host.ptr.example",
    # split.example: an SPF record split into two strings
    'txt-record=split.example,"v=spf1 ip4:192.0.2.0","/24 -all"',
]
DOMAINS = [
    "tenant.example",
    "app.example",
    "strict.example",
    "twice.example",
    "voids.example",
    "ptr.example",
    "split.example",
    "empty.example",
]


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[RealDnsServer]:
    require(dnsmasq_availability(), "real-DNS")
    with RealDnsServer(DOMAINS, RECORDS) as server:
        yield server


@pytest.mark.parametrize(
    ("ip", "domain", "expected"),
    [
        ("192.0.2.10", "tenant.example", SpfVerdict.PASS),  # via include
        ("2001:db8:a::25", "tenant.example", SpfVerdict.PASS),
        ("198.51.100.25", "tenant.example", SpfVerdict.PASS),  # via mx
        ("203.0.113.9", "tenant.example", SpfVerdict.SOFTFAIL),
        ("203.0.113.5", "strict.example", SpfVerdict.PASS),
        ("203.0.113.9", "strict.example", SpfVerdict.FAIL),
        ("192.0.2.1", "twice.example", SpfVerdict.PERMERROR),
        ("192.0.2.1", "voids.example", SpfVerdict.PERMERROR),
        ("192.0.2.77", "ptr.example", SpfVerdict.PASS),
        ("192.0.2.78", "ptr.example", SpfVerdict.FAIL),
        ("192.0.2.1", "split.example", SpfVerdict.PASS),
        ("192.0.2.1", "empty.example", SpfVerdict.NONE),
    ],
)
def test_check_host_against_dnsmasq(
    dnsmasq: RealDnsServer, ip: str, domain: str, expected: SpfVerdict
) -> None:
    result = check_host(ip, domain, f"billing@{domain}", resolver=dnsmasq.resolver())
    assert result.result == expected, result.reason


def test_explanation_from_dnsmasq(dnsmasq: RealDnsServer) -> None:
    result = check_host(
        "203.0.113.9", "strict.example", "x@strict.example", resolver=dnsmasq.resolver()
    )
    assert result.explanation == "203.0.113.9 may not send for strict.example"
