"""parse_bounce on hostile input: bounded in size, time and recursion; a report, None or nothing."""

from __future__ import annotations

import random
import time

import pytest

from mailbridge.bounces import BounceReport, parse_bounce

HEAD = (
    b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b0\r\n\r\n"
)
STATUS = (
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
    b"Final-Recipient: rfc822; real@customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
)


def _timed(raw: bytes, seconds: float = 6.0) -> BounceReport | None:
    started = time.monotonic()
    report = parse_bounce(raw)
    assert time.monotonic() - started < seconds
    return report


def _unread(report: BounceReport | None) -> bool:
    """No report, or one that found no recipient (the status part was not read)."""
    return report is None or not report.recipients


def test_deep_nesting_stops_at_the_depth_limit() -> None:
    depth = 20_000
    opening = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    deep = _timed(HEAD + opening + b"--b%d\r\n" % depth + STATUS)
    assert _unread(deep)  # the status part is past the depth limit
    shallow = HEAD + b"--b0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n" + STATUS
    report = _timed(shallow)
    assert report is not None and report.recipients[0].address == "real@customer.example"


def test_many_parts_huge_headers_and_huge_messages_are_bounded() -> None:
    many = HEAD + b"--b0\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 200_000 + b"--b0\r\n" + STATUS
    assert _unread(_timed(many))  # the status part is past the part limit
    long_header = b"X-Junk: " + b"a" * 20_000_000 + b"\r\n" + HEAD + b"--b0\r\n" + STATUS
    assert _unread(_timed(long_header))  # past the 4 MiB read limit
    folded = b"Subject: x\r\n" + b" y\r\n" * 500_000 + HEAD + b"--b0\r\n" + STATUS
    _timed(folded)
    recipients = b"".join(
        b"\r\nFinal-Recipient: rfc822; u%d@c.example\r\nAction: failed\r\nStatus: 5.1.1\r\n" % i
        for i in range(20_000)
    )
    report = _timed(HEAD + b"--b0\r\n" + STATUS + recipients)
    assert report is not None and len(report.recipients) <= 501


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe" * 1000,
        b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n",
        b"Content-Type: multipart/report; boundary*=utf-8''%ff%fe\r\n\r\n--\xff\xfe\r\n",
        HEAD + b"--b0\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: "
        b"base64\r\n\r\n!!!!====\r\n",
        HEAD + b"--b0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\r\n",
        HEAD + b"--b0\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Final-Recipient: utf-8; \\x{D800}\\x{110000}@x.example\r\nAction: bogus\r\n",
        b"From: MAILER-DAEMON@x\r\nSubject: failure notice\r\n\r\n" + b"{" * 100_000,
        b"From: x@y\r\nSubject: AWS Notification\r\n\r\n"
        b'{"notificationType": "Bounce", "bounce": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"From: MAILER-DAEMON@x\r\nSubject: Returned mail\r\n\r\n" + b" " * 1_000_000 + b"@",
        b"From: MAILER-DAEMON@x\r\nSubject: =?iso-8\xff59-1?q?Undelivered?=\r\n\r\nx\r\n",
        b'From: MAILER-DAEMON@x\r\nContent-Type: text/plain; charset="utf\x00-8"\r\n\r\nx\r\n',
        b"From: MAILER-DAEMON@x\r\nSubject: Returned mail\r\n\r\n" + b"a@b.cc 550 5.1.1 " * 100_000,
        b"From: MAILER-DAEMON@x\r\nSubject: x\r\n\r\nThis message was created automatically by "
        b"mail delivery software.\r\n" + b"  " * 500_000 + b"x@y.example\r\n",
    ],
    ids=lambda raw: f"{len(raw)}-bytes",
)
def test_malformed_input_is_a_report_or_none(raw: bytes) -> None:
    report = _timed(raw)
    assert report is None or report.kind in ("dsn", "arf", "auto_reply", "heuristic")


def test_random_mutations_never_raise() -> None:
    from pathlib import Path

    corpus = sorted((Path(__file__).parent / "bounce_corpus").rglob("*.eml"))
    rng = random.Random(16)
    started = time.monotonic()
    for _ in range(400):  # bounded in count and time
        data = bytearray(rng.choice(corpus).read_bytes())
        for _ in range(rng.randint(1, 20)):
            position = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[position] = rng.randrange(256)
            elif choice < 0.7:
                del data[position : position + rng.randint(1, 50)]
            else:
                data[position:position] = rng.choice([b"\r", b"\n--", b"=?", b"+", b";", b"<"])
        parse_bounce(bytes(data))
        if time.monotonic() - started > 20:
            break


def test_only_bytes_are_accepted() -> None:
    with pytest.raises(TypeError):
        parse_bounce("From: x")  # type: ignore[arg-type]


_SENDMAIL = b"From: MAILER-DAEMON@x\r\nSubject: Returned mail\r\n\r\n"
_EXCHANGE = (
    b"From: postmaster@x\r\nSubject: Undeliverable\r\n\r\nDelivery has failed to these recipients"
    b" or groups\nDiagnostic information for administrators:\n"
)


@pytest.mark.parametrize(
    "raw",
    [
        # regular expressions that backtracked quadratically (minutes before the fix)
        b"From: MAILER-DAEMON@x\r\nContent-Type: text/html\r\n\r\n" + b"<script>" * 40_000,
        b"From: MAILER-DAEMON@x\r\nContent-Type: text/html\r\n\r\n" + b"<" * 250_000,
        b"From: MAILER-DAEMON@x\r\nSubject: Undelivered Mail\r\n\r\n" + b"-" * 2_000_000,
        b"From: MAILER-DAEMON@x\r\nSubject: x\r\n\r\n" + (b"-" * 60_000 + b"\n") * 60,
        _EXCHANGE + b"\n" * 3_000_000,
        _SENDMAIL + b"----- The following addresses had permanent fatal errors\n" + b"\n" * 65_000,
        # linear but slow: every byte of 4 MB of header or status text scanned many times
        b"From: a@b\r\n" + (b"X-Failed-Recipients: " + b"a" * 16_000 + b"\r\n") * 250 + b"\r\n",
        HEAD + b"--b0\r\nContent-Type: message/delivery-status\r\n\r\n" + b"\n \n" * 1_000_000,
        b"From: MAILER-DAEMON@x\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b"!" * 4_000_000,
    ],
    ids=[
        "unclosed-scripts",
        "unclosed-tags",
        "a-line-of-dashes",
        "lines-of-dashes",
        "exchange-blank-lines",
        "sendmail-blank-lines",
        "failed-recipients-headers",
        "blank-status-groups",
        "base64-junk",
    ],
)
def test_crafted_bodies_parse_within_a_second(raw: bytes) -> None:
    report = _timed(raw, seconds=1.0)
    assert report is None or report.kind in ("dsn", "arf", "auto_reply", "heuristic")
