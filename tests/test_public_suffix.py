"""The Public Suffix List decides organisational domains and the discovery boundary."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from mailbridge._psl import is_public_suffix, registered_domain
from mailbridge.dnsauth._dmarc import dmarc_alignment, organizational_domain
from mailbridge.providers import discover
from mailbridge.testing import FakeDnsServer


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hoster.co.id", "hoster.co.id"),  # co.id is a public suffix: hoster.co.id is registered
        ("mail.hoster.co.id", "hoster.co.id"),
        ("com.de", "com.de"),  # itself a public suffix: its own organisational domain
        ("shop.com.de", "shop.com.de"),
        ("mail.shop.example.co.uk", "example.co.uk"),
        ("mx.tenant-a.github.io", "tenant-a.github.io"),  # private section: github.io
        ("mail.bücher.de", "bücher.de"),  # IDN, U-labels
        ("mail.xn--bcher-kva.de", "xn--bcher-kva.de"),  # the same IDN as A-labels
        ("MX.Example.CO.UK.", "example.co.uk"),  # letter case and a trailing dot
        ("localhost", "localhost"),  # a single label
        ("mx.hoster.example", "hoster.example"),  # unknown TLDs count as public suffixes
    ],
)
def test_organizational_domain(name: str, expected: str) -> None:
    assert organizational_domain(name) == expected


@pytest.mark.parametrize(
    ("name", "public"),
    [("co.id", True), ("com.de", True), ("co.uk.", True), ("github.io", True),
     ("hoster.co.id", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_public_suffixes(name: str, public: bool) -> None:
    assert is_public_suffix(name) is public
    if public:
        assert registered_domain(name) is None


def test_two_tenants_of_one_platform_do_not_align() -> None:
    relayed = dmarc_alignment(
        "tenant-a.github.io", spf_domain="tenant-b.github.io", spf_pass=True, policy=None
    )
    assert not relayed.aligned


def test_the_list_loads_and_answers_without_network() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from mailbridge._psl import registered_domain\n"
        "assert registered_domain('a.hoster.co.id') == 'hoster.co.id'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert socket.getaddrinfo is not None  # this process was not touched


@pytest.mark.dns_server(zones={"shop.example": {"@": {"MX": "10 mx.hoster.co.id."}}})
def test_discovery_never_fetches_autoconfig_from_a_public_suffix(
    dns_server: FakeDnsServer,
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.urls: list[str] = []

        def fetch(self, url: str, timeout: float) -> bytes | None:
            self.urls.append(url)
            return None

    recorder = Recorder()
    discover(
        "x@shop.example",
        resolver=dns_server.resolver(timeout=0.5),
        fetcher=recorder,
        guess=False,
        timeout=3,
    )
    hosts = [url.split("/")[2] for url in recorder.urls]
    assert "autoconfig.hoster.co.id" in hosts  # the MX host's registered domain
    assert "autoconfig.co.id" not in hosts, hosts  # never the public suffix
