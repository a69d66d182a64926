"""`mailbridge demo`: send an invoice PDF through a local SMTP server with STARTTLS and AUTH."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

__all__ = ["invoice_pdf", "run_demo"]


def invoice_pdf(number: str, customer: str, amount: str) -> bytes:
    """A small, valid one-page PDF invoice (no dependencies needed)."""
    text = (
        f"BT /F1 20 Tf 72 760 Td (Invoice {number}) Tj ET\n"
        f"BT /F1 12 Tf 72 730 Td (Customer: {customer}) Tj ET\n"
        f"BT /F1 12 Tf 72 712 Td (Amount due: {amount}) Tj ET\n"
    ).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%sendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (index, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def run_demo(echo: Callable[[str], None] = print) -> int:
    """Start a local SMTP server, test the connection, send an invoice, show what arrived."""
    try:
        from .testing import FakeSmtpServer
    except ImportError as exc:  # without the testing extra
        echo(f"The demo runs a local SMTP server: {exc}")
        return 2
    from . import Attachment, DeliveryClient, DocumentEmail

    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    sender = "billing@acme.example"
    password = secrets.token_urlsafe(12)
    with FakeSmtpServer(tls="starttls", users={sender: password}) as server:
        server.refuse_recipient("old-address@customer.example", "550 5.1.1 Mailbox unavailable")
        echo(f"Local SMTP server on {server.host}:{server.port} (STARTTLS, AUTH required)\n")
        settings = server.smtp_settings()
        with DeliveryClient.own_smtp(sender, settings, display_name="Acme GmbH") as client:
            echo("Test connection:")
            report = client.test_connection()
            echo(_indent(str(report)))
            email = DocumentEmail(
                to="Jane Doe <jane@customer.example>",
                cc="old-address@customer.example",
                bcc="archive@acme.example",
                subject="Invoice {number} from Acme GmbH",
                body=(
                    "Dear {name},\n\nplease find attached invoice {number} "
                    "over {amount}.\n\nKind regards\nAcme GmbH\n"
                ),
                placeholders={"number": "2026-0042", "name": "Jane Doe", "amount": "1,190.00 EUR"},
                attachments=[
                    Attachment(
                        "Invoice-2026-0042.pdf",
                        invoice_pdf("2026-0042", "Jane Doe", "1,190.00 EUR"),
                    )
                ],
            )
            result = client.send(email)
        echo("\nSent:")
        echo(f"  Message-ID  {result.message_id}")
        echo(f"  accepted    {', '.join(result.accepted)}")
        for address, reply in result.refused.items():
            echo(f"  refused     {address}: {reply}")
        echo(f"  server      {result.reply}")
        (received,) = server.messages
        message = received.message
        echo("\nThe server received:")
        echo(f"  over TLS    {received.tls}, logged in as {received.user}")
        echo(f"  envelope    {received.mail_from} -> {', '.join(received.rcpt_tos)}")
        echo(f"  From        {message['From']}")
        echo(f"  Subject     {message['Subject']}")
        for part in message.iter_attachments():
            size = len(part.get_content())
            echo(f"  attachment  {part.get_filename()} ({part.get_content_type()}, {size} bytes)")
        echo(f"  Bcc header  {'absent' if message['Bcc'] is None else 'PRESENT'}")
    return 0 if report.ok and result.accepted else 1


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
