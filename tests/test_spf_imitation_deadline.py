"""SPF imitation with fallback off: check, plan and DMARC share one `timeout`, and are cached."""

from __future__ import annotations

import time

import pytest

from mailbridge import DeliveryClient, DocumentEmail, PlatformRelay, SenderNotAuthorized
from mailbridge.dnsauth import SpfPlanStatus
from mailbridge.testing import FakeDnsServer, FakeSmtpServer

pytestmark = pytest.mark.dns_server(zones={"tenant.example": {}, "app.example": {}})
EMAIL = DocumentEmail(to="jane@customer.example", subject="Invoice", body="Attached.")
TIMEOUT = 2.0


def _client(smtp: FakeSmtpServer, dns: FakeDnsServer) -> DeliveryClient:
    relay = PlatformRelay(
        smtp=smtp.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        spf_include="spf.app.example",
        sending_ips=("127.0.0.1",),
    )
    client = DeliveryClient.spf_imitation(
        "billing@tenant.example", relay, fallback=False, resolver=dns.resolver(timeout=30)
    )
    client.identity.timeout = TIMEOUT  # type: ignore[attr-defined]
    return client


def test_an_include_that_never_answers_holds_each_send_only_timeout(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 include:slow.tenant.example -all"')
    dns_server.timeout("slow.tenant.example")
    dns_server.timeout("_dmarc.tenant.example")
    with _client(smtp_server, dns_server) as client:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(SenderNotAuthorized) as caught:
                client.send(EMAIL)
            assert time.monotonic() - started < TIMEOUT + 1.0
            assert "temperror" in str(caught.value)
            assert "no record to publish can be worked out" in str(caught.value)
            assert caught.value.plan is None
    assert smtp_server.messages == []


def test_the_plan_is_cached_with_the_check(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 mx -all"')
    with _client(smtp_server, dns_server) as client:
        with pytest.raises(SenderNotAuthorized) as first:
            client.send(EMAIL)
        queries = dns_server.query_count
        with pytest.raises(SenderNotAuthorized) as second:
            client.send(EMAIL)
    assert dns_server.query_count == queries  # neither the check nor the plan asked again
    for caught in (first, second):
        assert caught.value.plan is not None
        assert caught.value.plan.status == SpfPlanStatus.UPDATE
        assert caught.value.plan.new_record == "v=spf1 include:spf.app.example mx -all"
