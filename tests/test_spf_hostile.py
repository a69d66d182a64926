"""Hostile SPF records (issue 12, item 1): bounded time and memory; the deadline covers CPU."""

from __future__ import annotations

import ipaddress
import threading
import time
import types

import pytest

from mailbridge._addresses import parse_mailbox
from mailbridge._identity import PlatformRelay
from mailbridge._spf_identity import SpfIdentity
from mailbridge.dnsauth import SpfVerdict, check_host
from mailbridge.dnsauth import _spf as spf_module
from mailbridge.dnsauth._spf_macros import (
    MAX_EXPLANATION,
    MacroContext,
    MacroTimeout,
    expand,
    expand_domain,
    parse_macro_string,
    truncate_domain,
)
from mailbridge.settings import SmtpSettings
from mailbridge.testing._dns import FakeDnsServer

pytestmark = pytest.mark.dns_server(zones={"example.com": {}, "in-addr.arpa": {}})

IP = "192.0.2.1"
IP_ADDRESS = ipaddress.ip_address(IP)


def _long_domain(label: int) -> str:
    """A name of about 253 characters in example.com, made of `label`-character labels."""
    labels: list[str] = []
    while len(".".join([*labels, "x" * label, "example.com"])) <= 253:
        labels.append(chr(ord("a") + len(labels) % 26) * label)
    return ".".join([*labels, "example.com"])


def _naive_truncate(name: str) -> str:
    """RFC 7208 7.3 as written: one label at a time (quadratic; small inputs only)."""
    name = name.rstrip(".")
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name


def _serve(server: FakeDnsServer, name: str, text: str) -> None:
    parts = [text[i : i + 250] for i in range(0, len(text), 250)]
    server.add_record(name, "TXT", " ".join(f'"{part}"' for part in parts))


def _macros(size: int, prefix: str) -> str:
    return prefix + "%{d}" * ((size - len(prefix)) // 4)


def _check(server: FakeDnsServer, domain: str, timeout: float):  # type: ignore[no-untyped-def]
    return check_host(IP, domain, f"x@{domain}", resolver=server.resolver(), timeout=timeout)


@pytest.mark.parametrize("label", [63, 1], ids=["63-char-labels", "1-char-labels"])
def test_a_58_kb_macro_record_is_answered_within_the_timeout(
    dns_server: FakeDnsServer, label: int
) -> None:
    domain = _long_domain(label)
    _serve(dns_server, domain, _macros(58 * 1024, "v=spf1 exists:"))
    started = time.monotonic()
    result = _check(dns_server, domain, timeout=1)
    assert time.monotonic() - started < 1 + 1  # it used to take minutes
    assert result.result == SpfVerdict.NEUTRAL  # exists found nothing: the record's answer
    # ... having looked up the name RFC 7208 7.3 asks for: the rightmost labels that fit
    # (unless a label is too long for DNS, as "comaaa...": then it names nothing).
    expected = _naive_truncate(domain * 3)
    possible = all(len(label) <= 63 for label in expected.split("."))
    sent = [query.name.rstrip(".") for query in dns_server.queries if query.rdtype == "A"]
    assert sent == ([expected] if possible else [])


def test_macros_left_of_the_kept_labels_are_never_expanded(dns_server: FakeDnsServer) -> None:
    domain = _long_domain(63)
    _serve(dns_server, domain, "v=spf1 exists:%{p}%{d}%{d}%{d} -all")
    assert _check(dns_server, domain, timeout=5).result == SpfVerdict.FAIL
    assert dns_server.count(rdtype="PTR") == 0  # %{p} lies beyond the 253 kept characters


def test_explanations_are_cut_at_max_explanation(dns_server: FakeDnsServer) -> None:
    domain = _long_domain(63)
    _serve(dns_server, domain, "v=spf1 -all exp=why.example.com")
    _serve(dns_server, "why.example.com", _macros(20 * 1024, "Denied: "))
    result = _check(dns_server, domain, timeout=5)
    assert result.result == SpfVerdict.FAIL
    assert result.explanation is not None
    assert len(result.explanation) == MAX_EXPLANATION
    assert result.explanation.startswith(f"Denied: {domain}{domain}")


def test_the_deadline_covers_work_between_dns_queries(
    dns_server: FakeDnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only ip4 terms: no DNS query after the record's, so only the evaluator's own
    # loops can notice that time is up. Each look at the clock costs 0.25 s here.
    now = [time.monotonic()]

    def clock() -> float:
        now[0] += 0.25
        return now[0]

    monkeypatch.setattr(spf_module, "time", types.SimpleNamespace(monotonic=clock))
    _serve(dns_server, "example.com", "v=spf1 " + "ip4:198.51.100.1 " * 60 + "-all")
    result = _check(dns_server, "example.com", timeout=5)
    assert result.result == SpfVerdict.TEMPERROR
    assert "took too long" in result.reason


def test_parsing_and_expanding_look_at_the_deadline() -> None:
    context = MacroContext(IP_ADDRESS, "x@example.com", "example.com")
    past = time.monotonic() - 1
    with pytest.raises(MacroTimeout):
        parse_macro_string("%{d}" * 1000, deadline=past)
    parsed = parse_macro_string("%{d}" * 1000)
    with pytest.raises(MacroTimeout):
        expand(parsed, context, deadline=past)
    assert expand_domain(parsed, context, deadline=time.monotonic() + 60) == truncate_domain(
        "example.com" * 1000
    )


def test_truncation_is_rfc_7208_7_3() -> None:
    labels = ["a" * 63, "b" * 63, "c" * 63, "d" * 63, "e" * 5]
    name = ".".join(labels)
    assert truncate_domain(name) == _naive_truncate(name) == ".".join(labels[1:])
    assert truncate_domain(name + "...") == ".".join(labels[1:])
    assert truncate_domain("x" * 300) == "x" * 300  # one label too long: names nothing
    assert truncate_domain("a." + "x" * 300) == "x" * 300
    assert truncate_domain("short.example") == "short.example"
    # Linear: a 2 MB expansion of one-character labels is cut in one pass.
    assert truncate_domain("a." * 1_000_000 + "example.com") == _naive_truncate(
        "a." * 200 + "example.com"
    )


# -- SPF imitation: the check runs under a lock before sending ---------------------------


def _identity(server: FakeDnsServer, timeout: float) -> SpfIdentity:
    relay = PlatformRelay(
        smtp=SmtpSettings("127.0.0.1", 2525, "none"),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        sending_ips=("127.0.0.1",),
    )
    tenant = parse_mailbox("sender", "billing@tenant.example.com")
    return SpfIdentity(tenant, relay, resolver=server.resolver(timeout=3), timeout=timeout)


def test_a_hanging_tenant_record_holds_concurrent_sends_only_until_the_timeout(
    dns_server: FakeDnsServer,
) -> None:
    dns_server.timeout("tenant.example.com", "TXT")  # never answers
    identity = _identity(dns_server, timeout=1)
    times: list[float] = []
    answers: list[object] = []

    def send() -> None:
        started = time.monotonic()
        answers.append(identity.authorization())
        times.append(time.monotonic() - started)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(times) == 4 and max(times) < 1 + 1  # not 4 checks one after another
    assert all(not answer.authorized for answer in answers)  # type: ignore[attr-defined]
    assert "temperror" in answers[0].reason  # type: ignore[attr-defined]
    # Sends that waited for the running check shared its answer instead of repeating it.
    assert dns_server.count("tenant.example.com", "TXT") <= 2


def test_a_macro_bomb_cannot_hold_the_lock_past_the_timeout(dns_server: FakeDnsServer) -> None:
    domain = "tenant.example.com"
    _serve(dns_server, domain, _macros(58 * 1024, "v=spf1 exists:"))
    identity = _identity(dns_server, timeout=1)
    started = time.monotonic()
    authorization = identity.authorization()
    assert time.monotonic() - started < 1 + 1
    assert not authorization.authorized
