"""parse_bounce on the corners of RFC 3464 / 3461 / 6533 that real reports reach."""

from __future__ import annotations

import base64

from mailbridge.bounces import BounceReport, parse_bounce

PER_MESSAGE = b"Reporting-MTA: dns; mx.example\r\n\r\n"


def _dsn(status: bytes, *, part_headers: bytes = b"") -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b0\r\n\r\n"
        b"--b0\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--b0\r\nContent-Type: message/delivery-status\r\n"
        + part_headers
        + b"\r\n"
        + status
        + b"\r\n--b0\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <orig@us.example>\r\nTo: a@c.example\r\n\r\n--b0--\r\n"
    )


def _parsed(raw: bytes) -> BounceReport:
    report = parse_bounce(raw)
    assert report is not None and report.kind == "dsn"
    return report


def test_a_quoted_local_part_with_a_space_is_one_address() -> None:
    report = _parsed(
        _dsn(
            PER_MESSAGE + b'Final-Recipient: rfc822; "john doe"@c.example\r\n'
            b"Action: failed\r\nStatus: 5.1.1\r\n"
        )
    )
    assert [r.address for r in report.recipients] == ['"john doe"@c.example']
    angled = _parsed(
        _dsn(
            PER_MESSAGE + b'Final-Recipient: rfc822;<"a;b c"@c.example>\r\n'
            b"Action: failed\r\nStatus: 5.1.1\r\n"
        )
    )
    assert [r.address for r in angled.recipients] == ['"a;b c"@c.example']


def test_the_envelope_id_is_xtext_decoded_as_utf8_and_control_characters_refused() -> None:
    status = b"Final-Recipient: rfc822; u@c.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    utf8 = _parsed(_dsn(b"Original-Envelope-Id: id+2Bx+3Dj+C3+B6rg\r\n" + PER_MESSAGE + status))
    assert utf8.original_envelope_id == "id+x=jörg"
    injected = _parsed(
        _dsn(b"Original-Envelope-Id: ab+0D+0AX-Evil:+20yes\r\n" + PER_MESSAGE + status)
    )
    assert injected.original_envelope_id is None
    assert injected.recipients[0].address == "u@c.example"


def test_a_base64_status_part_with_padding_keeps_its_last_line() -> None:
    text = b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822;u@c.example\nAction: failed\n"
    for status in (b"Status: 5.1.1\n", b"Status: 5.2.2", b"Status: 5.1.10"):
        assert len(text + status) % 3  # the encoding ends in padding
        encoded = base64.encodebytes(text + status)
        report = _parsed(_dsn(encoded, part_headers=b"Content-Transfer-Encoding: base64\r\n"))
        assert report.recipients[0].status == status.split()[1].decode()


def test_a_heuristic_report_takes_no_address_from_an_original_quoted_with_brackets() -> None:
    report = parse_bounce(
        b"From: MAILER-DAEMON@mx.example\r\nSubject: Delivery failure\r\n"
        b"To: billing@acme.example\r\n\r\n"
        b"Delivery to gone@c.example failed: 550 5.1.1 user unknown\r\n\r\n"
        b"> From: billing@acme.example\r\n> To: gone@c.example, other@c.example\r\n"
        b">> Cc: boss@c.example\r\n"
    )
    assert report is not None and report.kind == "heuristic"
    assert [r.address for r in report.recipients] == ["gone@c.example"]


def test_a_bounce_marked_auto_replied_from_an_unusual_sender_is_no_auto_reply() -> None:
    report = parse_bounce(
        b"From: Microsoft Outlook <MicrosoftExchange329e71ec@contoso.example>\r\n"
        b"Subject: Undeliverable: Invoice 17\r\nAuto-Submitted: auto-replied\r\n"
        b"Return-Path: <>\r\n\r\n"
        b"Delivery to gone@c.example failed permanently: 550 5.1.1 user unknown\r\n"
    )
    assert report is not None and report.kind == "heuristic"  # a bounce, checked with care
    assert [(r.address, r.status) for r in report.recipients] == [("gone@c.example", "5.1.1")]
    vacation = parse_bounce(
        b"From: Jane <jane@c.example>\r\nSubject: Automatic reply: Undeliverable invoice?\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n"
    )
    assert vacation is not None and vacation.kind == "auto_reply"


def test_an_ses_bounce_of_undetermined_type_is_no_hard_bounce() -> None:
    raw = (
        b"From: no-reply@sns.amazonaws.example\r\nSubject: AWS Notification Message\r\n\r\n"
        b'{"notificationType":"Bounce","bounce":{"bounceType":"Undetermined",'
        b'"bounceSubType":"Undetermined","bouncedRecipients":[{"emailAddress":'
        b'"jane@customer.example"}]},"mail":{"commonHeaders":{"messageId":"<m@acme.example>"}}}'
    )
    report = parse_bounce(raw)
    assert report is not None and report.source == "amazon_ses"
    (recipient,) = report.recipients
    assert recipient.action == "failed" and recipient.status is None
    assert not recipient.permanent and not report.permanent  # never suppressed on a guess
