"""Reasons from what real servers say: the text first, the RFC 3463 code when the text is silent."""

from __future__ import annotations

import pytest

from mailbridge.bounces import Reason
from mailbridge.bounces._reasons import classify, find_reply_code, find_status, is_permanent

# (the remote server's reply as bounces quote it, the reason)
REPLIES = [
    (
        "550 5.1.1 <x@c.example>: Recipient address rejected: User unknown in virtual alias table",
        Reason.USER_UNKNOWN,
    ),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        Reason.USER_UNKNOWN,
    ),
    ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", Reason.USER_UNKNOWN),
    ("553 5.3.0 <x@c.example>... Addressee unknown, relay=[192.0.2.1]", Reason.USER_UNKNOWN),
    ("550 Requested action not taken: mailbox unavailable", Reason.USER_UNKNOWN),
    ("552-5.2.2 The email account that you tried to reach is over quota", Reason.MAILBOX_FULL),
    ("452 4.2.2 Mailbox size limit exceeded", Reason.MAILBOX_FULL),
    ("552 5.2.2 <b@example.test> Quota exceeded (mailbox for user is full)", Reason.MAILBOX_FULL),
    ("552 5.3.4 Message size exceeds fixed limit", Reason.MESSAGE_TOO_BIG),
    (
        "Host or domain name not found. Name service error for name=c.example type=MX",
        Reason.HOST_UNKNOWN,
    ),
    (
        "554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org",
        Reason.BLOCKED,
    ),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.9]", Reason.BLOCKED),
    ("450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.9]", Reason.BLOCKED),
    (
        "550-5.7.26 Unauthenticated email from a.example is not accepted: domain's DMARC policy",
        Reason.AUTH_FAILURE,
    ),
    ("550 5.7.1 Message rejected due to SPF policy", Reason.AUTH_FAILURE),
    ("554 5.7.1 Message rejected as spam by Content Filtering", Reason.SPAM_DETECTED),
    ("554 5.7.1 <x@c.example>: Relay access denied", Reason.POLICY),
    (
        "421 4.7.0 [TSS04] Messages from 192.0.2.9 temporarily deferred due to unexpected volume",
        Reason.RATE_LIMITED,
    ),
    ("421 4.7.28 Our system has detected an unusual rate of unsolicited mail", Reason.RATE_LIMITED),
    ("550 5.2.1 The email account that you tried to reach is disabled", Reason.SUSPENDED),
    ("551 5.1.6 User not local; please try <new@c.example>", Reason.HAS_MOVED),
    ("553 5.1.8 <a@acme.example>: Sender address rejected: Domain not found", Reason.HOST_UNKNOWN),
    ("550 5.1.8 Sender address rejected: undeliverable", Reason.REJECTED),
    ("connect to mx.c.example[192.0.2.9]:25: Connection timed out", Reason.NETWORK_ERROR),
    ("delivery temporarily suspended: message stayed in queue too long", Reason.EXPIRED),
    ("451 4.3.0 Temporary system failure, please try later", Reason.OTHER),
]


@pytest.mark.parametrize(("reply", "reason"), REPLIES, ids=[r for r, _ in REPLIES])
def test_reason_of_real_replies(reply: str, reason: Reason) -> None:
    assert classify(find_status(reply), reply, find_reply_code(reply)) == reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("5.1.1", "user_unknown"),
        ("4.2.2", "mailbox_full"),
        ("5.3.4", "message_too_big"),
        ("4.4.7", "expired"),
        ("5.7.13", "suspended"),
        ("5.7.25", "auth_failure"),
        ("5.1.10", "host_unknown"),
        ("5.9.9", "other"),
    ],
)
def test_the_status_code_decides_when_the_text_says_nothing(status: str, reason: str) -> None:
    assert classify(status, "") == reason


def test_status_and_reply_code_finding() -> None:
    assert find_status("#5.1.1 smtp;550 5.1.1 x") == "5.1.1"
    assert find_status("version 1.2.3.4 and 10.5.1.1") is None  # IP addresses are no status
    assert find_reply_code("554: delivery error") == 554
    assert find_reply_code("[192.0.2.250] said") is None


def test_permanent_means_failed_with_a_5xx() -> None:
    assert is_permanent("failed", "5.1.1", None)
    assert not is_permanent("failed", "4.4.7", 550)  # given up after temporary failures
    assert not is_permanent("delayed", "5.1.1", None)
    assert is_permanent("failed", None, 550) and not is_permanent("failed", None, None)
