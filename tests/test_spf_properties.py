"""Property tests (hypothesis) for SPF macro expansion and plan_include()."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbridge.dnsauth import SpfPlanStatus, plan_include
from mailbridge.dnsauth._spf_macros import (
    MacroContext,
    MacroError,
    expand,
    expand_domain,
    truncate_domain,
)
from mailbridge.testing import FakeDnsServer

LABEL = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
LOCAL = st.from_regex(r"[a-z0-9][a-z0-9.+_=-]{0,10}", fullmatch=True)
IP = st.one_of(
    st.ip_addresses(v=4).filter(lambda ip: not ip.is_unspecified),
    st.ip_addresses(v=6),
)
LITERAL = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="%"),
    max_size=12,
)


@given(local=LOCAL, domain=DOMAIN, ip=IP, literal=LITERAL)
def test_literals_pass_through_unchanged(local: str, domain: str, ip: object, literal: str) -> None:
    context = MacroContext(ip, f"{local}@{domain}", domain)  # type: ignore[arg-type]
    assert expand(literal, context) == literal


@given(
    local=LOCAL,
    domain=DOMAIN,
    ip=IP,
    digits=st.integers(min_value=1, max_value=9),
    reverse=st.booleans(),
)
def test_transformers_keep_the_rightmost_labels(
    local: str, domain: str, ip: object, digits: int, reverse: bool
) -> None:
    context = MacroContext(ip, f"{local}@{domain}", domain)  # type: ignore[arg-type]
    labels = domain.split(".")
    if reverse:
        labels.reverse()
    expected = ".".join(labels[-digits:])
    assert expand(f"%{{d{digits}{'r' if reverse else ''}}}", context) == expected


@given(ip=IP)
def test_ip_macro_round_trips(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    context = MacroContext(ip, "a@example.com", "example.com")
    expanded = expand("%{i}", context)
    if ip.version == 4:
        assert ipaddress.ip_address(expanded) == ip
    else:
        nibbles = expanded.split(".")
        assert len(nibbles) == 32
        assert int("".join(nibbles), 16) == int(ip)
        assert expand("%{ir}", context) == ".".join(reversed(nibbles))


@given(text=st.text(max_size=20))
def test_expansion_either_succeeds_or_raises_macro_error(text: str) -> None:
    context = MacroContext(ipaddress.ip_address("192.0.2.1"), "a@example.com", "example.com")
    with contextlib.suppress(MacroError):
        expand(text, context, explanation=True)


TERM = st.sampled_from(
    [
        "mx",
        "a",
        "ip4:192.0.2.0/24",
        "ip6:2001:db8::/32",
        "-ip4:198.51.100.1",
        "include:_spf.other.example",
        "?exists:%{i}.x.other.example",
        "ptr",
        "~mx:mail.other.example",
    ]
)
ENDING = st.sampled_from(["-all", "~all", "?all", ""])


@pytest.fixture(scope="module")
def dns() -> FakeDnsServer:
    with FakeDnsServer(
        {
            "tenant.example": {},
            "app.example": {"spf": {"TXT": '"v=spf1 ip4:192.0.2.0/24 -all"'}},
            "other.example": {"_spf": {"TXT": '"v=spf1 ip4:203.0.113.0/24 -all"'}},
        }
    ) as server:
        yield server  # type: ignore[misc]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(terms=st.lists(TERM, max_size=5, unique=True), ending=ENDING)
def test_plan_keeps_every_term_and_still_parses(
    dns: FakeDnsServer, terms: list[str], ending: str
) -> None:
    record = " ".join(["v=spf1", *terms, *([ending] if ending else [])])
    dns.remove_records("tenant.example", "TXT")
    dns.add_record("tenant.example", "TXT", f'"{record}"')
    plan = plan_include("tenant.example", "spf.app.example", resolver=dns.resolver())
    assert plan.status in (SpfPlanStatus.UPDATE, SpfPlanStatus.FIX_FIRST)
    if plan.status == SpfPlanStatus.UPDATE:
        assert plan.new_record is not None
        new_terms = plan.new_record.split()
        assert new_terms[:2] == ["v=spf1", "include:spf.app.example"]
        assert new_terms[2:] == record.split()[1:]  # every old term, in order
        assert plan.lookups <= 10


def _naive_truncate(name: str) -> str:
    name = name.rstrip(".")
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name


NAME_PARTS = st.lists(st.from_regex(r"[a-z0-9]{0,70}", fullmatch=True), max_size=12)


@given(labels=NAME_PARTS, dots=st.integers(min_value=0, max_value=3))
def test_truncation_is_the_label_by_label_rule(labels: list[str], dots: int) -> None:
    name = ".".join(labels) + "." * dots
    assert truncate_domain(name) == _naive_truncate(name)


MACRO_TOKEN = st.sampled_from(
    ["%{d}", "%{o}", "%{l}", "%{s}", "%{i}", "%{ir}", "%{d2}", "%{D}", "%{l1r-}", "%%", "%-"]
)
DOMAIN_TOKEN = st.one_of(MACRO_TOKEN, LITERAL, st.just("."))


@given(
    tokens=st.lists(DOMAIN_TOKEN, max_size=40),
    labels=st.lists(st.from_regex(r"[a-z]{1,63}", fullmatch=True), min_size=2, max_size=5),
    ip=IP,
)
def test_domain_expansion_from_the_right_equals_expanding_then_truncating(
    tokens: list[str], labels: list[str], ip: object
) -> None:
    domain = ".".join(labels)
    context = MacroContext(ip, f"strong-bad@{domain}", domain)  # type: ignore[arg-type]
    text = "".join(tokens)
    assert expand_domain(text, context) == truncate_domain(expand(text, context))
