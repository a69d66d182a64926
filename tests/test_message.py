from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path

import pytest

from mailbridge import (
    Attachment,
    DocumentEmail,
    HeaderInjection,
    InvalidAddress,
    MessageError,
    MissingPlaceholder,
)
from mailbridge._addresses import Mailbox, parse_mailbox, parse_mailbox_list
from mailbridge._message import render_placeholders
from mailbridge.composer import compose
from mailbridge.errors import MessageFormatError

from .conftest import INVOICE_PDF

SENDER = parse_mailbox("sender", "billing@acme.example")
AUTHOR = parse_mailbox("sender", "Acme GmbH <billing@acme.example>")


def _compose(**fields: object) -> bytes:
    values: dict[str, object] = {"to": "bob@example.test", "subject": "s", "body": "b"}
    values.update(fields)
    return compose(DocumentEmail(**values), sender=SENDER, author=AUTHOR).data  # type: ignore[arg-type]


def test_address_lists_split_on_commas_and_semicolons() -> None:
    boxes = parse_mailbox_list("to", 'a@x.example, Bob <b@y.example>; "Doe, Jane" <j@z.example>')
    assert [b.address for b in boxes] == ["a@x.example", "b@y.example", "j@z.example"]
    assert [b.display_name for b in boxes] == ["", "Bob", "Doe, Jane"]


def test_address_list_deduplicates() -> None:
    assert len(parse_mailbox_list("to", ["a@x.example", "a@X.Example"])) == 1
    assert len(parse_mailbox_list("to", ["a@x.example", "A@x.example"])) == 2  # RFC 5321 2.4


def test_display_names_may_hold_any_character() -> None:
    (box,) = parse_mailbox_list("to", "Jürgen Müller <jm@x.example>")
    assert box.display_name == "Jürgen Müller"


@pytest.mark.parametrize(
    "bad", ["not-an-address", "a@", "@x.example", "a@b@x.example", "a@x.invalid", "a @x.example"]
)
def test_bad_address_names_field_and_address(bad: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        DocumentEmail(to="ok@x.example", cc=bad, subject="s", body="b")
    assert info.value.field == "cc"
    assert info.value.address == bad.strip()
    assert "cc: invalid address" in str(info.value)


def test_internationalized_addresses() -> None:
    (idn,) = parse_mailbox_list("to", "info@bücher.example")
    assert idn.ascii_address == "info@xn--bcher-kva.example"
    assert not idn.needs_smtputf8
    (utf8,) = parse_mailbox_list("to", "jürgen@example.test")
    assert utf8.needs_smtputf8


def test_at_least_one_recipient() -> None:
    with pytest.raises(MessageError, match="to: at least one recipient"):
        DocumentEmail(to=[], subject="s", body="b")


def test_placeholders() -> None:
    text = render_placeholders(
        "subject", "Invoice {n} ({total:.2f} EUR) {{literal}}", {"n": "2026-7", "total": 12.5}
    )
    assert text == "Invoice 2026-7 (12.50 EUR) {literal}"


def test_missing_placeholder_is_named() -> None:
    with pytest.raises(MissingPlaceholder) as info:
        DocumentEmail(to="a@x.example", subject="Invoice {invoice_number}", body="b")
    assert info.value.field == "subject"
    assert info.value.name == "invoice_number"


@pytest.mark.parametrize("template", ["{a.__class__}", "{a[0]}", "{a!r}", "{0}", "{}", "{a", "a}"])
def test_placeholders_refuse_attribute_access_and_bad_braces(template: str) -> None:
    with pytest.raises(MessageError) as info:
        DocumentEmail(to="a@x.example", subject="s", body=template, placeholders={"a": "x"})
    assert info.value.field == "body"


def test_html_placeholders_are_escaped() -> None:
    data = _compose(html="<p>{name}</p>", placeholders={"name": "<script>"})
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert "&lt;script&gt;" in html_part.get_content()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"subject": "Invoice\r\nBcc: victim@x.example"}, "subject"),
        ({"subject": "Invoice {n}", "placeholders": {"n": "1\nBcc: v@x.example"}}, "subject"),
        ({"headers": {"X-Ref": "1\r\nBcc: v@x.example"}}, "headers[X-Ref]"),
        ({"to": "Bob\n <b@x.example>"}, "to"),
        ({"reply_to": "r@x.example\r\nBcc: v@x.example"}, "reply_to"),
    ],
)
def test_header_injection_is_refused(fields: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"to": "bob@example.test", "subject": "s", "body": "b"}
    values.update(fields)
    with pytest.raises(HeaderInjection) as info:
        DocumentEmail(**values)  # type: ignore[arg-type]
    assert info.value.field == field


def test_attachment_filename_injection_refused() -> None:
    with pytest.raises(HeaderInjection):
        Attachment("a.pdf\r\nContent-Type: text/html", b"x")
    with pytest.raises(MessageError, match="must not contain a path"):
        Attachment("../../etc/passwd", b"x")


def test_reserved_headers_cannot_be_overridden() -> None:
    with pytest.raises(MessageError, match="Bcc is set by mailbridge"):
        DocumentEmail(to="a@x.example", subject="s", body="b", headers={"Bcc": "x@y.example"})
    with pytest.raises(MessageError, match="not a valid header name"):
        DocumentEmail(to="a@x.example", subject="s", body="b", headers={"X Bad": "1"})


def test_composed_message_has_required_headers_and_no_bcc() -> None:
    data = _compose(
        to="Bob <bob@example.test>",
        cc="carol@example.test",
        bcc="secret@example.test",
        reply_to="office@acme.example",
        headers={"X-Invoice-Id": "2026-001"},
    )
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["From"] == "Acme GmbH <billing@acme.example>"
    assert parsed["Reply-To"] == "office@acme.example"
    assert parsed["Message-ID"].endswith("@acme.example>")
    assert parsed["Date"] and parsed["MIME-Version"] == "1.0"
    assert parsed["X-Invoice-Id"] == "2026-001"
    assert b"secret@example.test" not in data
    assert "Bcc" not in parsed


def test_envelope_includes_bcc() -> None:
    prepared = compose(
        DocumentEmail(to="a@x.example", bcc="b@x.example", subject="s", body="b"),
        sender=SENDER,
        author=AUTHOR,
    )
    assert prepared.recipients == ("a@x.example", "b@x.example")
    assert prepared.bcc == ("b@x.example",)


def test_wire_format_is_crlf_and_short_lines() -> None:
    data = _compose(
        body="line1\nline2\rline3\r\n" + "x" * 5000,
        attachments=[Attachment("invoice.pdf", INVOICE_PDF * 200)],
    )
    lines = data.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(len(line) for line in lines) <= 998


def test_attachment_types_detected(invoice_pdf: Path) -> None:
    attachment = Attachment.from_path(invoice_pdf)
    assert attachment.filename == "Invoice 2026-001.pdf"
    assert attachment.resolved_content_type == "application/pdf"
    assert Attachment("rechnung", INVOICE_PDF).resolved_content_type == "application/pdf"
    assert Attachment("x.xml", b"<?xml version='1.0'?><a/>").resolved_content_type == (
        "application/xml"
    )
    assert Attachment("notes.txt", b"hi").resolved_content_type == "text/plain"
    assert Attachment("blob", b"\x00\x01").resolved_content_type == "application/octet-stream"
    with pytest.raises(MessageError, match="cannot read"):
        Attachment.from_path(invoice_pdf.with_name("missing.pdf"))


def test_attachment_with_non_ascii_filename_roundtrips() -> None:
    data = _compose(attachments=[Attachment("Rechnung Größe.pdf", INVOICE_PDF)])
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    (part,) = list(parsed.iter_attachments())
    assert part.get_filename() == "Rechnung Größe.pdf"
    assert part.get_content() == INVOICE_PDF


def test_fixed_message_id_and_date() -> None:
    when = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)
    data = _compose(message_id="<inv-1@acme.example>", date=when)
    assert b"Message-ID: <inv-1@acme.example>" in data
    assert b"Date: Sat, 21 Nov 2026 09:30:00 +0000" in data
    with pytest.raises(MessageError, match="timezone-aware"):
        DocumentEmail(to="a@x.example", subject="s", body="b", date=dt.datetime(2026, 1, 1))


def test_smtputf8_message_uses_utf8_headers() -> None:
    prepared = compose(
        DocumentEmail(to="jürgen@example.test", subject="Grüße", body="b"),
        sender=SENDER,
        author=AUTHOR,
    )
    assert prepared.smtputf8
    assert "To: jürgen@example.test".encode() in prepared.data


ENCODED_CRLF = "=?utf-8?q?ACME=0D=0AReply-To:_attacker@evil.example=0D=0A?="


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"subject": "Invoice {c}", "placeholders": {"c": ENCODED_CRLF}}, "subject"),
        ({"headers": {"X-Customer": ENCODED_CRLF}}, "headers[X-Customer]"),
        ({"to": f'"{ENCODED_CRLF}" <jane@customer.example>'}, "to"),
        (
            {"attachments": [Attachment("=?utf-8?q?a=0D=0AX-Injected:_1?=.pdf", b"%PDF-1.4")]},
            "attachments",
        ),
    ],
)
def test_encoded_word_line_breaks_are_refused(fields: dict[str, object], field: str) -> None:
    """RFC 2047 encoded CR/LF would be decoded by the email package and written out raw."""
    with pytest.raises(HeaderInjection) as info:
        _compose(**fields)
    assert info.value.field in (field, "message")


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_every_line_break_character_is_refused(char: str) -> None:
    with pytest.raises(HeaderInjection):
        DocumentEmail(to="a@x.example", subject=f"Invoice{char}1", body="b")


def test_eml_attachment_is_sent_opaque_and_multipart_refused() -> None:
    data = _compose(attachments=[Attachment("forwarded.eml", b"Subject: x\n\nbody\n")])
    assert b"Content-Type: application/octet-stream" in data
    with pytest.raises(MessageError, match="cannot be attached"):
        Attachment("x", b"x", content_type="multipart/mixed")


def test_non_ascii_text_is_7bit_safe() -> None:
    data = _compose(body="Schöne Grüße", html="<p>Grüße</p>")
    assert data.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable" in data


def test_unencodable_text_is_a_message_error() -> None:
    with pytest.raises(MessageError) as info:
        _compose(body="broken \ud800 surrogate")
    assert info.value.field == "message"


def test_huge_format_width_refused() -> None:
    with pytest.raises(MessageError, match="width too large"):
        DocumentEmail(to="a@x.example", subject="s", body="{n:>300000000}", placeholders={"n": 1})


def test_distinct_local_parts_are_kept() -> None:
    boxes = parse_mailbox_list("to", "Straße@x.example, strasse@x.example, Anna@x.example")
    assert len(boxes) == 3


@pytest.mark.parametrize(
    "value", ['"a..b"@example.test', "Bob <bob@example.test> <evil@example.test>"]
)
def test_quoted_local_parts_and_double_addresses_refused(value: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_mailbox_list("to", value)


def test_comments_do_not_confuse_the_splitter() -> None:
    boxes = parse_mailbox_list("to", "joe@x.example (Joe <3), b@x.example")
    assert [b.address for b in boxes] == ["joe@x.example", "b@x.example"]
    assert boxes[0].display_name == "Joe <3"


def test_content_headers_are_reserved() -> None:
    with pytest.raises(MessageError, match="Content-Language is set by mailbridge"):
        DocumentEmail(to="a@x.example", subject="s", body="b", headers={"Content-Language": "de"})


def test_message_id_must_be_printable_ascii() -> None:
    with pytest.raises(MessageError):
        DocumentEmail(to="a@x.example", subject="s", body="b", message_id="<ä@x.example>")


def test_long_message_ids_in_references_stay_intact() -> None:
    long_id = "<" + "a" * 90 + "@mail.gmail.com>"
    data = _compose(headers={"References": f"{long_id} <b@x.example>", "In-Reply-To": long_id})
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["In-Reply-To"] == long_id
    assert parsed["References"].split() == [long_id, "<b@x.example>"]
    assert b"=?utf-8?" not in data


@pytest.mark.parametrize(
    "message_id",
    [
        '<q"uote@x.example>',
        "<a(b)@x.example>",
        "<a b@x.example>",
        "<a..b@x.example>",
        "<@x.example>",
    ],
)
def test_message_ids_follow_rfc_5322(message_id: str) -> None:
    with pytest.raises(MessageError):
        DocumentEmail(to="a@x.example", subject="s", body="b", message_id=message_id)


ENCODED_LOCAL = "=?utf-8?q?b=C3=BCro=0D=0A?=@acme.example"


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to", "from_override"])
@pytest.mark.parametrize("form", ["{}", "Büro <{}>", "{} (Büro)"])
def test_encoded_word_in_an_address_is_refused(field: str, form: str) -> None:
    """RFC 2047 section 5: no encoded word in an addr-spec, in any address field."""
    fields: dict[str, object] = {"to": "x@y.example", field: form.format(ENCODED_LOCAL)}
    with pytest.raises(InvalidAddress) as info:
        DocumentEmail(subject="s", body="b", **fields)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "encoded word" in str(info.value)


def test_encoded_word_is_refused_in_the_envelope_and_direct_mailboxes() -> None:
    with pytest.raises(InvalidAddress):
        parse_mailbox("sender", "=?us-ascii?q?a?=@acme.example")
    with pytest.raises(InvalidAddress):  # a Mailbox built by hand is checked too
        Mailbox(address=ENCODED_LOCAL, ascii_address=ENCODED_LOCAL)
    assert parse_mailbox("to", "a=b?c@x.example").address == "a=b?c@x.example"


@pytest.mark.parametrize(
    ("target", "error", "expected", "field"),
    [
        # Debian's 3.11.2 re-reads the encoded CR LF of a display name and refuses it so.
        (
            "email.parser.BytesParser.parsebytes",
            ValueError("invalid arguments; address parts cannot contain CR or LF"),
            HeaderInjection,
            "message",
        ),
        ("email.message.MIMEPart.__setitem__", ValueError("no"), MessageFormatError, "from"),
        (
            "email.message.MIMEPart.set_content",
            LookupError("unknown"),
            MessageFormatError,
            "message",
        ),
    ],
)
def test_stdlib_errors_while_composing_are_typed(
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    error: Exception,
    expected: type[MessageError],
    field: str,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(target, refuse)
    with pytest.raises(expected) as info:
        _compose()
    assert info.value.field == field


def test_missing_placeholder_in_the_body_stays_itself() -> None:
    email_ = DocumentEmail(to="a@x.example", subject="s", body="b")
    object.__setattr__(email_, "body", "{missing}")
    with pytest.raises(MissingPlaceholder):
        compose(email_, sender=SENDER, author=AUTHOR)
