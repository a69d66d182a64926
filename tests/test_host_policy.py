"""Host names from documents and DNS: real names and plain literals only, checked once."""

from __future__ import annotations

import pytest

from mailbridge.providers._hosts import checked_addresses, host_problem, is_internal


@pytest.mark.parametrize(
    "host",
    [
        "0x7f000001",  # hexadecimal 127.0.0.1
        "0xa9fea9fe",  # hexadecimal 169.254.169.254
        "0x7f.0x0.0x0.0x1",  # dotted hexadecimal
        "2130706433",  # decimal 127.0.0.1
        "0177.0.0.1",  # octal first part
        "127.1",  # short form
        "127.0.1",
        "017700000001",
        "mail.example.123",  # a numeric top-level label
        "a..example",
        "-mail.example",
        "mail_1.example",
        "x" * 64 + ".example",
        "mail.example/evil",
        "",
    ],
)
def test_refused_host_forms(host: str) -> None:
    assert host_problem(host) is not None
    addresses, refused = checked_addresses(host, None, 1.0, allow_private=True)
    assert addresses == [] and refused is not None  # not even with allow_private


@pytest.mark.parametrize(
    "host",
    ["mail.example.com", "mail.example.com.", "bücher.example", "xn--bcher-kva.example",
     "0x7f.example", "1.2.3.4.example", "203.0.113.5", "2001:db8::25"],
)  # fmt: skip
def test_accepted_host_forms(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    ("address", "internal"),
    [("127.0.0.1", True), ("10.1.2.3", True), ("169.254.169.254", True),
     ("100.64.0.1", True), ("::1", True), ("fe80::1", True), ("::ffff:127.0.0.1", True),
     ("224.0.0.1", True), ("0.0.0.0", True), ("8.8.8.8", False), ("2a00:1450::1", False)],
)  # fmt: skip
def test_internal_addresses(address: str, internal: bool) -> None:
    assert is_internal(address) is internal


def test_literals_and_localhost_are_checked_without_dns() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "mail.localhost"):
        addresses, refused = checked_addresses(host, None, 1.0, allow_private=False)
        assert addresses == [] and refused is not None and "internal" in refused
    assert checked_addresses("127.0.0.1", None, 1.0, allow_private=True) == (["127.0.0.1"], None)


@pytest.mark.parametrize(
    ("address", "internal"),
    [("::127.0.0.1", True), ("::10.0.0.1", True), ("64:ff9b::7f00:1", True),
     ("64:ff9b::a9fe:a9fe", True), ("2002:7f00:1::", True), ("2002:a00:1::1", True),
     ("64:ff9b::808:808", False), ("2002:808:808::1", False)],
)  # fmt: skip
def test_ipv4_embedded_in_ipv6_is_checked_too(address: str, internal: bool) -> None:
    assert is_internal(address) is internal
    assert (checked_addresses(address, None, 1.0, allow_private=False)[1] is not None) is internal


def test_fetch_no_longer_re_exports_resolve_host() -> None:
    from mailbridge.providers import _fetch as fetch

    assert not hasattr(fetch, "resolve_host") and "resolve_host" not in fetch.__all__
