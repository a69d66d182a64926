"""plan_include(): the exact SPF record a tenant must publish."""

from __future__ import annotations

import time

import pytest

from mailbridge.dnsauth import SpfPlanStatus, SpfVerdict, check_host, plan_include
from mailbridge.testing import FakeDnsServer

pytestmark = pytest.mark.dns_server(
    zones={
        "tenant.example": {},
        "app.example": {"spf": {"TXT": '"v=spf1 ip4:192.0.2.0/24 -all"'}},
        "other.example": {},
    }
)
INCLUDE = "spf.app.example"


def _plan(server: FakeDnsServer, domain: str = "tenant.example"):  # type: ignore[no-untyped-def]
    return plan_include(domain, INCLUDE, resolver=server.resolver(timeout=0.5))


def test_no_record_proposes_one(dns_server: FakeDnsServer) -> None:
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.CREATE
    assert plan.new_record == "v=spf1 include:spf.app.example ~all"
    assert "Add this TXT record for tenant.example" in plan.instructions


def test_include_goes_right_after_the_version_everything_else_kept(
    dns_server: FakeDnsServer,
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 mx ip4:198.51.100.7 -all"')
    dns_server.add_record("tenant.example", "TXT", '"google-site-verification=abc"')
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.UPDATE
    assert plan.current_record == "v=spf1 mx ip4:198.51.100.7 -all"
    assert plan.new_record == "v=spf1 include:spf.app.example mx ip4:198.51.100.7 -all"
    assert plan.lookups == 2
    # once published, the platform's relay passes
    dns_server.remove_records("tenant.example", "TXT")
    dns_server.add_record("tenant.example", "TXT", f'"{plan.new_record}"')
    verdict = check_host(
        "192.0.2.9", "tenant.example", "x@tenant.example", resolver=dns_server.resolver()
    )
    assert verdict.result == SpfVerdict.PASS
    assert _plan(dns_server).status == SpfPlanStatus.NOTHING_TO_DO


def test_two_records_must_be_merged_first(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 mx -all"')
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 a -all"')
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.FIX_FIRST
    assert "2 SPF records" in plan.instructions


def test_plus_all_must_go_first(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 mx +all"')
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.FIX_FIRST
    assert "+all" in plan.instructions


def test_record_that_would_exceed_ten_lookups(dns_server: FakeDnsServer) -> None:
    includes = " ".join(f"include:s{n}.other.example" for n in range(5))
    for n in range(5):
        dns_server.add_record(f"s{n}.other.example", "TXT", '"v=spf1 a mx -all"')
    dns_server.add_record("tenant.example", "TXT", f'"v=spf1 {includes} -all"')
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.FIX_FIRST
    assert plan.lookups == 16
    assert "16 DNS lookups" in plan.instructions


def test_dns_error(dns_server: FakeDnsServer) -> None:
    dns_server.fail("tenant.example")
    assert _plan(dns_server).status == SpfPlanStatus.DNS_ERROR


def test_an_include_after_all_does_not_count(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 -all include:spf.app.example"')
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.UPDATE
    assert plan.new_record == "v=spf1 include:spf.app.example -all include:spf.app.example"


def test_a_record_check_host_rejects_must_be_fixed_first(dns_server: FakeDnsServer) -> None:
    # A tab between terms: receivers give permerror (RFC 7208 4.6.1), even though the
    # include is there, so "nothing to do" would be wrong.
    dns_server.add_record("tenant.example", "TXT", r'"v=spf1 include:spf.app.example\009-all"')
    plan = _plan(dns_server)
    assert plan.status == SpfPlanStatus.FIX_FIRST
    assert "'\\t'" in plan.instructions and "Retype it" in plan.instructions
    verdict = check_host("192.0.2.9", "tenant.example", "x@tenant.example", resolver=_r(dns_server))
    assert verdict.result == SpfVerdict.PERMERROR


def test_all_of_a_plans_queries_end_by_its_timeout(dns_server: FakeDnsServer) -> None:
    includes = " ".join(f"include:s{n}.other.example" for n in range(5))
    dns_server.add_record("tenant.example", "TXT", f'"v=spf1 {includes} -all"')
    for n in range(5):
        dns_server.add_record(f"s{n}.other.example", "TXT", '"v=spf1 a -all"')
        dns_server.delay(f"s{n}.other.example", 0.8)  # five of them: 4 s one after another
    started = time.monotonic()
    plan = plan_include("tenant.example", INCLUDE, resolver=_r(dns_server), timeout=1.5)
    assert time.monotonic() - started < 1.5 + 1
    assert plan.status == SpfPlanStatus.DNS_ERROR
    assert "try again later" in plan.instructions


def _r(server: FakeDnsServer):  # type: ignore[no-untyped-def]
    return server.resolver(timeout=2)
