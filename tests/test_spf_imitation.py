"""SPF imitation: the tenant's own From through the platform relay, once SPF allows it."""

from __future__ import annotations

import pytest

from mailbridge import DeliveryClient, DocumentEmail, SenderNotAuthorized
from mailbridge._identity import PlatformRelay
from mailbridge.dnsauth import SpfPlanStatus
from mailbridge.dnsauth._dmarc import dmarc_alignment, lookup_dmarc, organizational_domain
from mailbridge.testing import FakeDnsServer, FakeSmtpServer

pytestmark = pytest.mark.dns_server(
    zones={
        "tenant.example": {"_dmarc": {"TXT": '"v=DMARC1; p=reject; rua=mailto:d@tenant.example"'}},
        "app.example": {"spf": {"TXT": '"v=spf1 ip4:127.0.0.0/8 -all"'}},
    }
)
EMAIL = DocumentEmail(to="jane@customer.example", subject="Invoice", body="Attached.")


def _client(smtp: FakeSmtpServer, dns: FakeDnsServer, **kwargs: object) -> DeliveryClient:
    relay = PlatformRelay(
        smtp=smtp.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        spf_include="spf.app.example",
        sending_ips=("127.0.0.1",),
    )
    return DeliveryClient.spf_imitation(
        "billing@tenant.example", relay, "Acme GmbH", resolver=dns.resolver(timeout=0.5), **kwargs
    )  # type: ignore[arg-type]


def test_authorised_tenant_sends_as_itself(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 include:spf.app.example ~all"')
    with _client(smtp_server, dns_server) as client:
        authorization = client.sender_authorization()
        assert authorization.authorized
        assert authorization.dmarc is not None and authorization.dmarc.aligned
        result = client.send(EMAIL)
    assert result.mode == "spf_imitation" and result.note is None
    received = smtp_server.messages[0]
    assert received.mail_from == "billing@tenant.example"
    assert received.message["From"] == "Acme GmbH <billing@tenant.example>"


def test_unauthorised_tenant_falls_back_to_relay(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 mx -all"')
    with _client(smtp_server, dns_server) as client:
        authorization = client.sender_authorization()
        assert not authorization.authorized
        assert authorization.dmarc is not None and authorization.dmarc.at_risk
        assert "reject" in authorization.dmarc.reason
        result = client.send(EMAIL)
    assert result.mode == "relay"
    assert result.note is not None and "fail" in result.note
    assert (
        smtp_server.messages[0].message["From"] == "Acme GmbH via Example App <noreply@app.example>"
    )


def test_unauthorised_tenant_gets_the_record_to_publish(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 mx -all"')
    with _client(smtp_server, dns_server, fallback=False) as client:
        with pytest.raises(SenderNotAuthorized) as info:
            client.send(EMAIL)
    assert info.value.plan.status == SpfPlanStatus.UPDATE
    assert info.value.plan.new_record == "v=spf1 include:spf.app.example mx -all"
    assert "v=spf1 include:spf.app.example mx -all" in str(info.value)
    assert smtp_server.messages == []


def test_the_check_is_cached_for_the_ttl(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 include:spf.app.example ~all"', ttl=120)
    with _client(smtp_server, dns_server) as client:
        client.send(EMAIL)
        dns_server.clear_queries()
        client.send(EMAIL)
        assert dns_server.count("tenant.example", "TXT") == 0  # cached
        assert client.sender_authorization(refresh=True).authorized
        assert client.sender_authorization().results[0].ttl == 120


def test_dmarc_lookup_and_alignment(dns_server: FakeDnsServer) -> None:
    resolver = dns_server.resolver()
    policy = lookup_dmarc("shop.tenant.example", resolver=resolver)  # organisational fallback
    assert policy is not None and policy.domain == "tenant.example" and policy.enforced
    assert lookup_dmarc("app.example", resolver=resolver) is None
    aligned = dmarc_alignment(
        "tenant.example", spf_domain="mail.tenant.example", spf_pass=True, policy=policy
    )
    assert aligned.aligned  # relaxed alignment: same organisational domain
    relayed = dmarc_alignment(
        "tenant.example", spf_domain="app.example", spf_pass=True, policy=policy
    )
    assert not relayed.aligned and relayed.at_risk
    assert organizational_domain("mail.shop.example.co.uk") == "example.co.uk"


@pytest.mark.realserver
def test_spf_imitation_end_to_end_through_postfix(real_servers, dns_server: FakeDnsServer) -> None:  # type: ignore[no-untyped-def]
    from mailbridge import SmtpSettings

    real_servers.clear_mailboxes()
    dns_server.add_record("tenant.example", "TXT", '"v=spf1 include:spf.app.example -all"')
    relay = PlatformRelay(
        smtp=SmtpSettings(
            real_servers.host,
            real_servers.submission_port,
            "starttls",
            username="alice@example.test",
            password="alice-Secret-1",
            ca_file=real_servers.ca_file,
        ),
        app_name="Example App",
        noreply_address="noreply@example.test",
        bounce_address="bounces@example.test",
        sending_ips=("127.0.0.1",),
    )
    with DeliveryClient.spf_imitation(
        "billing@tenant.example", relay, "Acme GmbH", resolver=dns_server.resolver()
    ) as client:
        result = client.send(
            DocumentEmail(
                to="bob@example.test",
                subject="Invoice 9",
                body="b",
                reply_to="office@tenant.example",
            )
        )
    assert result.mode == "spf_imitation"
    (raw,) = real_servers.wait_for_messages("bob@example.test")
    header = raw.split(b"\n\n", 1)[0].decode()
    assert "Return-Path: <billing@tenant.example>" in header
    assert "From: Acme GmbH <billing@tenant.example>" in header
    assert "Reply-To: office@tenant.example" in header


def test_no_sending_ips_is_never_authorised(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    from mailbridge._addresses import parse_mailbox
    from mailbridge._spf_identity import SpfIdentity

    relay = PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
    )
    identity = SpfIdentity(
        parse_mailbox("s", "billing@tenant.example"), relay, resolver=dns_server.resolver()
    )
    assert not identity.authorization().authorized


def test_from_override_must_stay_in_the_tenants_domain(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    from mailbridge import MessageError

    dns_server.add_record("tenant.example", "TXT", '"v=spf1 include:spf.app.example ~all"')
    with _client(smtp_server, dns_server) as client:
        with pytest.raises(MessageError) as info:
            client.send(
                DocumentEmail(
                    to="j@customer.example",
                    subject="s",
                    body="b",
                    from_override="ceo@other-tenant.example",
                )
            )
        assert info.value.field == "from_override"
        client.send(
            DocumentEmail(
                to="j@customer.example",
                subject="s",
                body="b",
                from_override="Sales <sales@tenant.example>",
            )
        )
    assert smtp_server.messages[-1].message["From"] == "Sales <sales@tenant.example>"
