"""DNS failures and bad DNS options are user-facing errors of the CLI, never 'a bug'."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from mailbridge import ConfigurationError, DnsLookupError
from mailbridge.dnsauth import check_host
from mailbridge.dnsauth._dmarc import dmarc_alignment, lookup_dmarc
from mailbridge.testing import FakeDnsServer


@pytest.fixture
def dns_server() -> Iterator[FakeDnsServer]:
    with FakeDnsServer(zones={"example.com": {}}) as server:
        server.timeout("_dmarc.slow.example.com")
        yield server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "mailbridge", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    return run


def _dns(server: FakeDnsServer) -> list[str]:
    return ["--nameserver", "127.0.0.1", "--dns-port", str(server.port), "--dns-timeout", "1"]


def test_a_dmarc_lookup_that_times_out_is_a_dns_error(dns_server: FakeDnsServer) -> None:
    started = time.monotonic()
    run = _cli("dmarc", "slow.example.com", *_dns(dns_server))
    assert run.returncode == 1
    assert "the DNS lookup of _dmarc.slow.example.com failed" in run.stderr
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "domain", ["a." * 130 + "com", "ex ample.com", "a..com", "x" * 64 + ".com"]
)
def test_a_domain_that_is_no_name_is_a_usage_error(dns_server: FakeDnsServer, domain: str) -> None:
    run = _cli("dmarc", domain, *_dns(dns_server))
    assert run.returncode == 2
    assert "domain:" in run.stderr and "is not a domain name" in run.stderr


@pytest.mark.parametrize(
    "option",
    [
        ["--dns-timeout", "nan"],
        ["--dns-timeout", "-1"],
        ["--dns-timeout", "0"],
        ["--dns-timeout", "inf"],
        ["--dns-port", "99999"],
        ["--dns-port", "0"],
        ["--dns-port", "x"],
    ],
)
def test_bad_dns_options_are_refused_by_name(option: list[str]) -> None:
    run = _cli(
        "spf", "check", "example.com", "--ip", "192.0.2.1", "--nameserver", "127.0.0.1", *option
    )
    assert run.returncode == 2
    assert f"argument {option[0]}" in run.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["spf", "check", "example.com", "--ip", "192.0.2.1"],
        ["dmarc", "example.com"],
        ["discover", "a@example.com"],
        ["setup", "a@example.com"],
    ],
)
def test_a_nameserver_must_be_an_ip_address(command: list[str]) -> None:
    run = _cli(*command, "--nameserver", "not-an-ip")
    assert run.returncode == 2
    assert "argument --nameserver: not an IPv4 or IPv6 address: 'not-an-ip'" in run.stderr


def test_bad_ports_and_time_outs_of_other_commands_are_refused() -> None:
    for args in (
        ["test-connection", "--host", "127.0.0.1", "--port", "70000"],
        ["test-connection", "--host", "127.0.0.1", "--port", "465", "--timeout", "nan"],
        ["discover", "a@example.com", "--timeout", "-1"],
    ):
        run = _cli(*args)
        assert run.returncode == 2 and "argument --" in run.stderr, run.stderr


def test_library_errors_are_typed(dns_server: FakeDnsServer) -> None:
    resolver = dns_server.resolver(timeout=0.5)
    with pytest.raises(DnsLookupError) as caught:
        lookup_dmarc("slow.example.com", resolver=resolver)
    assert caught.value.name == "_dmarc.slow.example.com" and caught.value.temporary
    alignment = dmarc_alignment("slow.example.com", resolver=resolver)
    assert not alignment.aligned and "could not be read" in alignment.reason
    with pytest.raises(ConfigurationError) as bad_domain:
        lookup_dmarc("a." * 130 + "com", resolver=resolver)
    assert bad_domain.value.field == "domain"
    with pytest.raises(ConfigurationError) as bad_ip:
        check_host("not-an-ip", "example.com", "a@example.com", resolver=resolver)
    assert bad_ip.value.field == "ip"
    for timeout in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ConfigurationError) as bad_timeout:
            check_host("192.0.2.1", "example.com", "a@example.com", timeout=timeout)
        assert bad_timeout.value.field == "timeout"
