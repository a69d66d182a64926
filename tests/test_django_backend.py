"""mailbridge.django.EmailBackend against the fake SMTP server: what Django gives, arrives."""

from __future__ import annotations

import base64
import email
import email.policy
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage as StdEmailMessage
from email.message import MIMEPart
from email.mime.image import MIMEImage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings

from mailbridge import (
    ConfigurationError,
    DeliveryClient,
    DocumentEmail,
    HeaderInjection,
    MailbridgeError,
    MessageError,
    PlatformRelay,
    RecipientsRefused,
)
from mailbridge.django import EmailBackend, Tenant, close_clients
from mailbridge.dnsauth._dkim import DkimSigner
from mailbridge.testing import FakeDnsServer, FakeSmtpServer
from tests.django_project import mail as project_mail

from ._django import BACKEND, django
from .conftest import INVOICE_PDF, USER

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture
def acme(smtp_server: FakeSmtpServer) -> Iterator[FakeSmtpServer]:
    """The tenant "acme" sends through the fake server as tenant@example.test."""
    project_mail.TENANTS["acme"] = (USER, smtp_server.smtp_settings())
    try:
        with override_settings(EMAIL_BACKEND=BACKEND):
            yield smtp_server
    finally:
        project_mail.TENANTS.clear()
        close_clients()


def _parse(data: bytes) -> StdEmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, StdEmailMessage)
    return parsed


def _text(part: StdEmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_every_message_feature_arrives(acme: FakeSmtpServer, tmp_path: Path) -> None:
    terms = tmp_path / "terms.txt"
    terms.write_text("Zahlbar in 14 Tagen.\n", encoding="utf-8")
    logo = MIMEImage(PNG, "png")
    logo.add_header("Content-ID", "<logo@acme.example>")
    logo.add_header("Content-Disposition", "inline", filename="logo.png")
    message = EmailMultiAlternatives(
        subject="Rechnung 2026-7 für Jane",
        body="Guten Tag,\r\nanbei die Rechnung.\n",
        to=["Jane Doe <jane@customer.example>"],
        cc=["accounting@customer.example"],
        bcc=["archive@acme.example"],
        reply_to=["billing@acme.example", "Sales <sales@acme.example>"],
        headers={"X-Mailbridge-Tenant": "acme", "X-Invoice": "2026-7"},
    )
    message.attach_alternative("<p>Guten Tag, <b>anbei</b> die Rechnung.</p>", "text/html")
    message.attach_alternative("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "text/calendar")
    message.attach("invoice.pdf", INVOICE_PDF, "application/pdf")
    message.attach_file(terms)
    message.attach(logo)
    message.encoding = "iso-8859-1"

    assert message.send() == 1

    (received,) = acme.messages
    assert received.mail_from == USER
    assert received.rcpt_tos == (
        "jane@customer.example",
        "accounting@customer.example",
        "archive@acme.example",
    )
    assert received.data.isascii()  # 8-bit parts re-encoded: no 8BITMIME needed
    parsed = _parse(received.data)
    assert parsed["From"] == "acme GmbH <tenant@example.test>"
    assert parsed["To"] == "Jane Doe <jane@customer.example>"
    assert parsed["Cc"] == "accounting@customer.example"
    assert parsed["Reply-To"] == "billing@acme.example, Sales <sales@acme.example>"
    assert parsed["Subject"] == "Rechnung 2026-7 für Jane"
    assert parsed["X-Invoice"] == "2026-7"
    assert "Bcc" not in parsed and b"archive@acme.example" not in received.data
    assert "X-Mailbridge-Tenant" not in parsed  # the resolver's hint stays home
    assert parsed["Message-ID"] == message.mailbridge_result.message_id
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content_charset() == "iso-8859-1"
    assert _text(plain) == "Guten Tag,\nanbei die Rechnung.\n"
    assert "<b>anbei</b>" in html.get_content()
    types = [part.get_content_type() for part in parsed.walk()]
    assert "text/calendar" in types
    files = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert files["invoice.pdf"].get_content() == INVOICE_PDF
    assert _text(files["terms.txt"]) == "Zahlbar in 14 Tagen.\n"
    assert files["logo.png"].get_content() == PNG
    assert files["logo.png"]["Content-ID"] == "<logo@acme.example>"
    # The caller's message is as it was: the tenant header is still there for a retry.
    assert message.extra_headers["X-Mailbridge-Tenant"] == "acme"
    status = message.mailbridge_result
    assert status.status == "sent"
    assert {a: s.status for a, s in status.recipients.items()} == {
        "jane@customer.example": "accepted",
        "accounting@customer.example": "accepted",
        "archive@acme.example": "accepted",
    }


@pytest.mark.skipif(django.VERSION < (6, 0), reason="MIMEPart attachments came with Django 6.0")
def test_mime_part_attachments_of_django_6(acme: FakeSmtpServer) -> None:
    part = MIMEPart()
    part.set_content(PNG, maintype="image", subtype="png", disposition="inline", cid="<l@a>")
    message = EmailMessage("Logo", "see the logo", to=["jane@customer.example"])
    message.attach(part)
    message.tenant = "acme"
    assert EmailBackend().send_messages([message]) == 1
    (image,) = [p for p in _parse(acme.messages[0].data).walk() if p["Content-ID"]]
    assert image["Content-ID"] == "<l@a>" and image.get_content() == PNG


def test_html_only_message_and_default_encoding(acme: FakeSmtpServer) -> None:
    message = EmailMessage("Mahnung", "<p>Bitte zahlen: 12 €</p>", to=["jane@customer.example"])
    message.content_subtype = "html"
    message.tenant = "acme"
    assert EmailBackend().send_messages([message]) == 1
    parsed = _parse(acme.messages[0].data)
    assert parsed.get_content_type() == "text/html"
    assert _text(parsed) == "<p>Bitte zahlen: 12 €</p>\n"
    assert acme.messages[0].data.isascii()


def test_from_email_overrides_the_tenant_address_but_the_default_does_not(
    acme: FakeSmtpServer,
) -> None:
    with pytest.raises(ConfigurationError, match="no tenant None"):  # the resolver's own error
        mail.send_mail("A", "b", "Acme <billing@example.test>", ["jane@customer.example"])
    messages = [
        EmailMessage("A", "b", "Acme Billing <billing@example.test>", ["jane@customer.example"]),
        EmailMessage("B", "b", None, ["jane@customer.example"]),  # DEFAULT_FROM_EMAIL
    ]
    for message in messages:
        message.tenant = "acme"
    assert EmailBackend().send_messages(messages) == 2
    froms = sorted(_parse(m.data)["From"] for m in acme.messages)
    assert froms == ["Acme Billing <billing@example.test>", "acme GmbH <tenant@example.test>"]
    assert {m.mail_from for m in acme.messages} == {USER}  # the envelope stays the tenant's


@pytest.mark.parametrize(
    ("headers", "subject", "error"),
    [
        ({"X-Note": "a\r\nBcc: victim@example.test"}, "Hi", HeaderInjection),
        ({"X-Note": "a\nb"}, "Hi", HeaderInjection),
        ({}, "Hi\r\nBcc: victim@example.test", HeaderInjection),
        ({"X-Note": "=?utf-8?q?a=0D=0ABcc:_victim@example.test?="}, "Hi", HeaderInjection),
        ({"Bad Name": "x"}, "Hi", MessageError),
        ({"Bcc": "hidden@example.test"}, "Hi", MessageError),
        ({"Content-Type": "text/html"}, "Hi", MessageError),
        ({"Resent-Bcc": "hidden@example.test"}, "Hi", MessageError),
        ({"Sender": "ceo@bank.example"}, "Hi", MessageError),
        ({"Return-Path": "bounces@elsewhere.example"}, "Hi", MessageError),
        ({"Received": "from forged.example"}, "Hi", MessageError),
    ],
)
def test_headers_are_still_checked_for_injection(
    acme: FakeSmtpServer, headers: dict[str, str], subject: str, error: type[Exception]
) -> None:
    message = EmailMessage(subject, "body", to=["jane@customer.example"], headers=headers)
    message.tenant = "acme"
    with pytest.raises(error):
        EmailBackend().send_messages([message])
    assert acme.messages == []
    assert message.mailbridge_result.status == "failed"
    assert EmailBackend(fail_silently=True).send_messages([message]) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", ["jörg@customer.example"]),
        ("cc", ["Jörg <jörg@customer.example>"]),
        ("reply_to", ["jörg@acme.example"]),
    ],
)
def test_non_ascii_local_parts_in_headers_are_refused_not_garbled(
    acme: FakeSmtpServer, field: str, value: list[str]
) -> None:
    """Django writes "jörg@x" into To as "=?utf-8?...?=@x", an address no one can read."""
    fields = {"to": ["jane@customer.example"], field: value}
    message = EmailMessage("Hi", "body", **fields)  # type: ignore[arg-type]
    message.tenant = "acme"
    with pytest.raises(MessageError, match="non-ASCII local part") as caught:
        EmailBackend().send_messages([message])
    assert caught.value.field == field
    assert acme.messages == []


def test_a_non_ascii_bcc_goes_in_the_envelope_only(acme: FakeSmtpServer) -> None:
    message = EmailMessage("Hi", "body", to=["jane@customer.example"], bcc=["jörg@acme.example"])
    message.tenant = "acme"
    assert EmailBackend().send_messages([message]) == 1
    (sent,) = acme.messages
    assert "jörg@acme.example" in sent.rcpt_tos
    assert b"j\xc3\xb6rg" not in sent.data and b"=?utf-8" not in sent.data.lower()


def test_a_line_break_hidden_in_an_encoded_display_name_is_injection(
    acme: FakeSmtpServer,
) -> None:
    message = EmailMessage(
        "Hi", "body", to=["=?utf-8?q?Jane=0D=0ABcc:_victim@example.test?= <jane@customer.example>"]
    )
    message.tenant = "acme"
    with pytest.raises(HeaderInjection):
        EmailBackend().send_messages([message])
    assert acme.messages == []


def test_bare_line_breaks_in_the_body_are_normalised_not_sent(acme: FakeSmtpServer) -> None:
    message = EmailMessage("Hi", "one\rtwo\nthree\r\n", to=["jane@customer.example"])
    message.tenant = "acme"
    EmailBackend().send_messages([message])
    data = acme.messages[0].data
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")


def test_partial_refusal_is_reported_per_recipient(acme: FakeSmtpServer) -> None:
    acme.refuse_recipient("gone@customer.example", "550 5.1.1 No such user")
    message = EmailMessage("Hi", "body", to=["jane@customer.example", "gone@customer.example"])
    message.tenant = "acme"
    assert EmailBackend().send_messages([message]) == 1
    status = message.mailbridge_result
    assert status.status == "partial"
    assert status.recipients["jane@customer.example"].status == "accepted"
    gone = status.recipients["gone@customer.example"]
    assert gone.status == "refused" and gone.reply is not None and gone.reply.code == 550


def test_failures_raise_unless_fail_silently_and_the_others_still_go(
    acme: FakeSmtpServer,
) -> None:
    acme.refuse_recipient("gone@customer.example", "550 5.1.1 No such user")
    bad = EmailMessage("Bad", "body", to=["gone@customer.example"])
    good = EmailMessage("Good", "body", to=["jane@customer.example"])
    for message in (bad, good):
        message.tenant = "acme"
    with pytest.raises(RecipientsRefused):
        EmailBackend().send_messages([bad, good])
    assert [m.rcpt_tos for m in acme.messages] == [("jane@customer.example",)]
    assert bad.mailbridge_result.status == "failed"
    assert isinstance(bad.mailbridge_result.error, RecipientsRefused)
    assert bad.mailbridge_result.recipients["gone@customer.example"].status == "refused"
    assert good.mailbridge_result.status == "sent"
    assert EmailBackend(fail_silently=True).send_messages([bad, good]) == 1


def test_connections_outlive_the_backend_django_makes_per_call(acme: FakeSmtpServer) -> None:
    for number in range(3):  # send_mail() makes a new backend every time
        message = EmailMessage(f"Invoice {number}", "body", to=["jane@customer.example"])
        message.tenant = "acme"
        message.send()
    assert len(acme.messages) == 3
    assert acme.connections == 1  # one pooled, authenticated connection for all three


def test_a_changed_tenant_gets_a_new_client_and_the_old_one_is_closed(
    acme: FakeSmtpServer,
) -> None:
    built: list[DeliveryClient] = []

    def build() -> DeliveryClient:
        built.append(DeliveryClient.own_smtp(USER, acme.smtp_settings()))
        return built[-1]

    versions = iter([1, 1, 2])

    def resolve(message: object) -> Tenant:
        return Tenant("acme", build, version=next(versions))

    for _ in range(3):
        message = EmailMessage("Hi", "body", to=["jane@customer.example"])
        EmailBackend(tenant_resolver=resolve).send_messages([message])
    assert len(built) == 2
    with pytest.raises(Exception, match="closed"):
        built[0].send(message.mailbridge_result.result.message)  # type: ignore[union-attr]


def test_a_client_replaced_while_its_message_waits_is_closed_only_after_the_send(
    acme: FakeSmtpServer,
) -> None:
    """One call with messages for two tenants and room for one client: the second evicts
    the first while the first message still waits to go (as another thread's send would)."""
    built: list[DeliveryClient] = []

    def resolve(message: object) -> Tenant:
        def build() -> DeliveryClient:
            built.append(DeliveryClient.own_smtp(USER, acme.smtp_settings()))
            return built[-1]

        return Tenant(str(getattr(message, "tenant", "")), build)

    messages = [EmailMessage(f"To {t}", "body", to=["jane@customer.example"]) for t in "ab"]
    for message, tenant in zip(messages, "ab", strict=True):
        message.tenant = tenant
    backend = EmailBackend(tenant_resolver=resolve, max_clients=1)
    assert backend.send_messages(messages) == 2
    assert sorted(_parse(m.data)["Subject"] for m in acme.messages) == ["To a", "To b"]
    first = built[0]  # evicted: closed once its send was done, its connection too
    with pytest.raises(MailbridgeError, match="closed"):
        first.send(first.prepare(DocumentEmail(to=["x@customer.example"], subject="", body="")))


def test_threads_sending_for_tenants_that_evict_each_other_all_succeed(
    acme: FakeSmtpServer,
) -> None:
    def resolve(message: object) -> Tenant:
        return Tenant(
            str(getattr(message, "tenant", "")),
            lambda: DeliveryClient.own_smtp(USER, acme.smtp_settings()),
        )

    failures: list[Exception] = []

    def work(worker: int) -> None:
        for number in range(8):
            message = EmailMessage("Hi", "body", to=["jane@customer.example"])
            message.tenant = f"t{(worker + number) % 3}"
            try:
                EmailBackend(tenant_resolver=resolve, max_clients=1).send_messages([message])
            except MailbridgeError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert len(acme.messages) == 32


def test_a_slow_client_build_holds_up_only_its_own_tenant(acme: FakeSmtpServer) -> None:
    """The resolver's build (a vault, a database) may be slow; other tenants still send."""
    building, release = threading.Event(), threading.Event()

    def slow_build() -> DeliveryClient:
        building.set()
        release.wait(timeout=10)
        return DeliveryClient.own_smtp(USER, acme.smtp_settings())

    def resolve(message: object) -> Tenant:
        if getattr(message, "tenant", None) == "slow":
            return Tenant("slow", slow_build)
        return Tenant("acme", lambda: DeliveryClient.own_smtp(USER, acme.smtp_settings()))

    def send(tenant: str) -> None:
        message = EmailMessage(f"For {tenant}", "body", to=["jane@customer.example"])
        message.tenant = tenant
        EmailBackend(tenant_resolver=resolve).send_messages([message])

    slow = threading.Thread(target=send, args=("slow",))
    fast = threading.Thread(target=send, args=("acme",))
    slow.start()
    try:
        assert building.wait(timeout=10)
        fast.start()
        fast.join(timeout=5)
        done_while_building = not fast.is_alive() and not release.is_set()
    finally:
        release.set()
        slow.join(timeout=10)
        if fast.ident is not None:
            fast.join(timeout=10)
    assert done_while_building
    assert sorted(_parse(m.data)["Subject"] for m in acme.messages) == ["For acme", "For slow"]


def test_threads_needing_the_same_new_client_build_it_once(acme: FakeSmtpServer) -> None:
    built: list[DeliveryClient] = []

    def build() -> DeliveryClient:
        time.sleep(0.05)  # long enough for the other threads to ask meanwhile
        built.append(DeliveryClient.own_smtp(USER, acme.smtp_settings()))
        return built[-1]

    def send() -> None:
        message = EmailMessage("Hi", "body", to=["jane@customer.example"])
        EmailBackend(tenant_resolver=lambda message: Tenant("acme", build)).send_messages([message])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(acme.messages) == 4
    assert len(built) == 1


def test_a_resolver_may_return_a_client_of_its_own(acme: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, acme.smtp_settings()) as client:
        backend = EmailBackend(tenant_resolver=lambda message: client)
        sent = backend.send_messages([EmailMessage("Hi", "b", to=["jane@customer.example"])])
    assert sent == 1 and len(acme.messages) == 1


def test_relay_mode_puts_the_tenant_first_and_replies_to_the_tenant(
    smtp_server: FakeSmtpServer,
) -> None:
    relay = PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@example.test",
        bounce_address="bounces@example.test",
    )
    client = DeliveryClient.relay("Acme GmbH <billing@acme.example>", relay)
    backend = EmailBackend(tenant_resolver=lambda message: Tenant("acme-relay", lambda: client))
    message = EmailMessage("Invoice", "body", to=["jane@customer.example"])
    try:
        assert backend.send_messages([message]) == 1
    finally:
        close_clients()
    (received,) = smtp_server.messages
    parsed = _parse(received.data)
    assert parsed["From"] == "Acme GmbH via Example App <noreply@example.test>"
    assert parsed["Reply-To"] == "Acme GmbH <billing@acme.example>"
    assert received.mail_from == "bounces@example.test"
    assert message.mailbridge_result.result.mode == "relay"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("resolver", "problem"),
    [
        (None, "no tenant resolver"),
        ("tests.django_project.no_such_module.resolve", "cannot import"),
        (lambda message: None, "returned NoneType"),
        (lambda message: Tenant("x", lambda: "not a client"), "must return a DeliveryClient"),
    ],
)
def test_resolver_mistakes_are_configuration_errors(resolver: object, problem: str) -> None:
    message = EmailMessage("Hi", "body", to=["jane@customer.example"])
    with (
        override_settings(MAILBRIDGE={"TENANT_RESOLVER": resolver}),
        pytest.raises(ConfigurationError, match=problem),
    ):
        EmailBackend().send_messages([message])
    close_clients()


def test_messages_without_recipients_are_skipped() -> None:
    assert EmailBackend().send_messages([]) == 0
    assert EmailBackend().send_messages([EmailMessage("Hi", "body")]) == 0


@pytest.mark.dns_server(
    zones={
        "tenant.example": {"@": {"TXT": '"v=spf1 include:spf.app.example -all"'}},
        "app.example": {"spf": {"TXT": '"v=spf1 ip4:127.0.0.1 -all"'}},
    }
)
def test_spf_imitation_signs_django_messages_with_dkim(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer
) -> None:
    dkim = pytest.importorskip("dkim")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    relay = PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        sending_ips=("127.0.0.1",),
    )
    signer = DkimSigner("tenant.example", "app1", pem)
    with DeliveryClient.spf_imitation(
        "billing@tenant.example", relay, "Acme", resolver=dns_server.resolver(), dkim=signer
    ) as client:
        message = EmailMultiAlternatives("Invoice", "body", to=["jane@customer.example"])
        message.attach_alternative("<p>body</p>", "text/html")
        assert EmailBackend(tenant_resolver=lambda m: client).send_messages([message]) == 1
    (received,) = smtp_server.messages
    assert received.mail_from == "billing@tenant.example"
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)
