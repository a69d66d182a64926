"""A DNS server that never answers: the fetch and discover() time-outs cover resolving too."""

from __future__ import annotations

import threading
import time

import dns.resolver
import pytest

from mailbridge.providers import HttpsFetcher, discover
from mailbridge.testing import FakeDnsServer

SLOW = "slow.example"
URL = f"https://autoconfig.{SLOW}/mail/config-v1.1.xml"
GRACE = 0.5  # how much later than its time-out a fetch or discover() may return

pytestmark = pytest.mark.dns_server(zones={SLOW: {}})


@pytest.fixture
def silent(dns_server: FakeDnsServer) -> FakeDnsServer:
    """Every name of the zone times out, for a resolver that would wait 30 s per query."""
    dns_server.timeout(SLOW)
    dns_server.timeout(f"autoconfig.{SLOW}")
    dns_server.timeout(f"_dmarc.{SLOW}")
    return dns_server


@pytest.fixture
def system_is_silent(silent: FakeDnsServer, monkeypatch: pytest.MonkeyPatch) -> FakeDnsServer:
    """The system's resolver (what resolver=None means) asks the silent server."""
    monkeypatch.setattr(dns.resolver, "default_resolver", silent.resolver(timeout=30))
    return silent


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mailbridge-")]


def test_fetch_time_out_covers_a_and_aaaa_together(silent: FakeDnsServer) -> None:
    fetcher = HttpsFetcher(resolver=silent.resolver(timeout=30))
    started = time.monotonic()
    assert fetcher.fetch(URL, timeout=1.0) is None
    assert time.monotonic() - started < 1.0 + GRACE
    assert silent.count(f"autoconfig.{SLOW}") >= 1


def test_fetch_without_resolver_is_bounded_too(system_is_silent: FakeDnsServer) -> None:
    started = time.monotonic()
    assert HttpsFetcher().fetch(URL, timeout=1.0) is None
    assert time.monotonic() - started < 1.0 + GRACE
    # The system's resolver was asked through dnspython, not an unbounded getaddrinfo.
    assert system_is_silent.count(f"autoconfig.{SLOW}", "A") >= 1


@pytest.mark.parametrize("own_resolver", [True, False])
def test_discover_with_silent_dns_leaves_no_threads(
    system_is_silent: FakeDnsServer, own_resolver: bool
) -> None:
    resolver = system_is_silent.resolver(timeout=30) if own_resolver else None
    started = time.monotonic()
    result = discover(f"x@{SLOW}", resolver=resolver, guess=False, timeout=1.5)
    returned = time.monotonic()
    assert returned - started < 1.5 + GRACE
    assert not result.smtp and result.timed_out
    while _workers() and time.monotonic() - returned < 5:
        time.sleep(0.02)
    assert not _workers()
    assert time.monotonic() - returned < GRACE
