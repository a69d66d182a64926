"""The Django backend against the real thing: Postfix with Dovecot SASL, into maildirs."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage as StdEmailMessage

import pytest
from django.core.mail import EmailMultiAlternatives
from django.test import override_settings

from mailbridge.django import close_clients
from mailbridge.testing.realservers import RealMailServers
from tests.django_project import mail as project_mail

from ._django import BACKEND
from .conftest import ALICE, INVOICE_PDF, alice_smtp

pytestmark = pytest.mark.realserver

BOB = "bob@example.test"


@pytest.fixture
def alice_tenant(mta: RealMailServers) -> Iterator[RealMailServers]:
    project_mail.TENANTS["alice"] = (ALICE, alice_smtp(mta))
    try:
        with override_settings(EMAIL_BACKEND=BACKEND):
            yield mta
    finally:
        project_mail.TENANTS.clear()
        close_clients()


def test_django_message_arrives_through_postfix(alice_tenant: RealMailServers) -> None:
    message = EmailMultiAlternatives(
        "Rechnung 2026-9",
        "Guten Tag Bob,\nanbei die Rechnung über 12 €.\n",
        to=[f"Bob <{BOB}>"],
        bcc=[ALICE],
        headers={"X-Mailbridge-Tenant": "alice"},
    )
    message.attach_alternative("<p>Rechnung über <b>12 €</b></p>", "text/html")
    message.attach("rechnung-2026-9.pdf", INVOICE_PDF, "application/pdf")
    assert message.send() == 1
    assert message.mailbridge_result.status == "sent"
    (bob_copy,) = alice_tenant.wait_for_messages(BOB)
    (alice_copy,) = alice_tenant.wait_for_messages(ALICE)  # the Bcc, by envelope only
    for raw in (bob_copy, alice_copy):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, StdEmailMessage)
        assert parsed["Message-ID"] == message.mailbridge_result.message_id
        assert parsed["From"] == f"alice GmbH <{ALICE}>"
        assert "Bcc" not in parsed and "X-Mailbridge-Tenant" not in parsed
        html = parsed.get_body(("html",))
        assert html is not None and "<b>12 €</b>" in html.get_content()
        (pdf,) = parsed.iter_attachments()
        assert pdf.get_filename() == "rechnung-2026-9.pdf"
        assert pdf.get_content() == INVOICE_PDF
