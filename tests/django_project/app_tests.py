"""An application's own tests, run by Django's test runner (`manage.py test`): mail sent
through `django.core.mail` lands in `mail.outbox`, whatever EMAIL_BACKEND says."""

from __future__ import annotations

from django.core import mail
from django.test import SimpleTestCase


class InvoiceMailTests(SimpleTestCase):
    def test_invoice_lands_in_the_outbox(self) -> None:
        message = mail.EmailMessage("Invoice 7", "body", to=["jane@customer.example"])
        message.tenant = "acme"
        assert message.send() == 1
        assert [m.subject for m in mail.outbox] == ["Invoice 7"]
