"""The autoconfig fetch time-out covers the whole exchange, and discover() leaves no threads."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator

import pytest
import trustme

from mailbridge.providers import HttpsFetcher, discover
from mailbridge.testing import FakeDnsServer

from ._trickle import TrickleServer

SLOW = "slow.example"
GRACE = 0.5  # how much later than its time-out a fetch or discover() may return


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(f"autoconfig.{SLOW}", SLOW, "127.0.0.1").configure_cert(context)
    return context


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(params=["headers", "body"])
def trickle(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[TrickleServer]:
    with TrickleServer(
        request.param, interval=0.2, max_seconds=8, ssl_context=_server_context(ca)
    ) as server:
        yield server


def _discovery_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mailbridge-")]


def test_fetch_gives_up_at_its_time_out(trickle: TrickleServer, ca: trustme.CA) -> None:
    fetcher = HttpsFetcher(ssl_context=_client_context(ca), port=trickle.port, allow_private=True)
    started = time.monotonic()
    body = fetcher.fetch(f"https://127.0.0.1/{trickle.part}", 1.0)
    elapsed = time.monotonic() - started
    assert body is None  # never a partial document
    assert trickle.connections == 1
    assert 0.9 < elapsed < 1.0 + GRACE, elapsed


@pytest.mark.dns_server(zones={SLOW: {"autoconfig": {"A": "127.0.0.1"}, "@": {"A": "127.0.0.1"}}})
def test_discover_returns_at_its_deadline_and_leaves_no_threads(
    dns_server: FakeDnsServer, trickle: TrickleServer, ca: trustme.CA
) -> None:
    fetcher = HttpsFetcher(
        resolver=dns_server.resolver(timeout=0.5),
        ssl_context=_client_context(ca),
        port=trickle.port,
        allow_private=True,
    )
    started = time.monotonic()
    result = discover(
        f"x@{SLOW}",
        resolver=dns_server.resolver(timeout=0.5),
        fetcher=fetcher,
        guess=False,
        timeout=1.5,
    )
    returned = time.monotonic()
    assert returned - started < 1.5 + GRACE
    assert "autoconfig" in result.timed_out
    while _discovery_threads() and time.monotonic() - returned < 5:
        time.sleep(0.02)
    outlived = time.monotonic() - returned
    assert not _discovery_threads()
    assert outlived < GRACE, outlived
