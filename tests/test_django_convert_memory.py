"""Converting a Django message holds its size a few times over, not a dozen (tracemalloc)."""

from __future__ import annotations

import email
import email.policy
import os
import tracemalloc
from email.message import EmailMessage as StdEmailMessage
from email.mime.base import MIMEBase

from django.core.mail import EmailMessage

from mailbridge import DeliveryClient, SmtpSettings
from mailbridge.composer import PreparedMessage
from mailbridge.django._convert import prepare_django_message

from ._django import django  # noqa: F401 (settings)

MB = 1024 * 1024
CLIENT = DeliveryClient.own_smtp("tenant@example.test", SmtpSettings("127.0.0.1", 2525, "none"))


def _prepared_with_peak(message: EmailMessage) -> tuple[PreparedMessage, int]:
    tracemalloc.start()
    try:
        prepared = prepare_django_message(CLIENT, message)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return prepared, peak


def _parse(data: bytes) -> StdEmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, StdEmailMessage)
    return parsed


def test_a_large_attachment_is_not_copied_a_dozen_times() -> None:
    pdf = os.urandom(4 * MB)
    message = EmailMessage("Rechnung für Jane", "Grüße", to=["jane@customer.example"])
    message.attach("Rechnung-März.pdf", pdf, "application/pdf")
    prepared, peak = _prepared_with_peak(message)
    assert peak < 6 * len(pdf), f"peak {peak / MB:.1f} MB for a {len(pdf) / MB:.0f} MB file"
    assert prepared.data.isascii()  # 7-bit, the UTF-8 body as quoted-printable
    parsed = _parse(prepared.data)
    body, attachment = parsed.iter_parts()
    assert isinstance(body, StdEmailMessage) and isinstance(attachment, StdEmailMessage)
    assert body["Content-Transfer-Encoding"] == "quoted-printable"
    assert body.get_content() == "Grüße"
    assert attachment.get_filename() == "Rechnung-März.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
    assert all(len(line) <= 78 for line in prepared.data.split(b"\r\n"))
    assert message.attachments[0].content is pdf  # the caller's message is unchanged


def test_a_large_utf8_body_is_not_parsed_and_written_again() -> None:
    body = ("Grüße aus Köln, Rechnung für Jane.\n") * (4 * MB // 40)
    message = EmailMessage("Rechnung", body, to=["jane@customer.example"])
    prepared, peak = _prepared_with_peak(message)
    size = len(body.encode())
    assert peak < 9 * size, f"peak {peak / MB:.1f} MB for a {size / MB:.1f} MB body"
    assert prepared.data.isascii()
    parsed = _parse(prepared.data)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    text = parsed.get_content()
    assert isinstance(text, str) and text.replace("\r\n", "\n") == body


def test_the_applications_own_8bit_mime_part_is_written_7bit_but_left_unchanged() -> None:
    part = MIMEBase("application", "octet-stream")
    part.set_payload("Grüße".encode().decode("ascii", "surrogateescape"))
    part["Content-Transfer-Encoding"] = "8bit"
    message = EmailMessage("Rechnung", "Grüße", to=["jane@customer.example"])
    message.attach(part)
    prepared = prepare_django_message(CLIENT, message)
    assert prepared.data.isascii()
    attachment = list(_parse(prepared.data).iter_parts())[1]
    assert isinstance(attachment, StdEmailMessage)
    assert attachment.get_content() == "Grüße".encode()
    assert part["Content-Transfer-Encoding"] == "8bit"  # the caller's part itself
