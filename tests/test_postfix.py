"""The SMTP layer against the real thing: Postfix with Dovecot SASL, delivering into maildirs."""

from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage

import pytest

from mailbridge import (
    Attachment,
    AuthenticationError,
    Category,
    DeliveryClient,
    DocumentEmail,
    RecipientsRefused,
    Security,
    SmtpSettings,
)
from mailbridge.smtp import SmtpConnection, probe_smtp
from mailbridge.testing.realservers import RealMailServers

from .conftest import INVOICE_PDF

pytestmark = pytest.mark.realserver

ALICE, ALICE_PW = "alice@example.test", "alice-Secret-1"
BOB = "bob@example.test"


def _settings(
    mta: RealMailServers, security: Security = Security.STARTTLS, **changes: object
) -> SmtpSettings:
    port = {
        Security.STARTTLS: mta.submission_port,
        Security.IMPLICIT_TLS: mta.smtps_port,
        Security.NONE: mta.smtp_port,
    }[security]
    values: dict[str, object] = {
        "host": mta.host,
        "port": port,
        "security": security,
        "ca_file": mta.ca_file,
        "username": ALICE,
        "password": ALICE_PW,
        "connect_timeout": 5.0,
        "command_timeout": 5.0,
    }
    values.update(changes)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("security", [Security.STARTTLS, Security.IMPLICIT_TLS])
def test_invoice_arrives_intact(mta: RealMailServers, security: Security) -> None:
    with DeliveryClient.own_smtp(ALICE, _settings(mta, security), display_name="Acme") as client:
        prepared = client.prepare(
            DocumentEmail(
                to=BOB,
                bcc=ALICE,
                subject="Invoice {n}",
                body="Dear Bob,\nsee invoice {n}.\n",
                placeholders={"n": "2026-9"},
                attachments=[Attachment("invoice.pdf", INVOICE_PDF)],
            )
        )
        result = client.send(prepared)
    assert result.accepted == (BOB, ALICE)
    (bob_copy,) = mta.wait_for_messages(BOB)
    (alice_copy,) = mta.wait_for_messages(ALICE)
    for raw in (bob_copy, alice_copy):
        message = _parse(raw)
        assert message["Message-ID"] == result.message_id
        assert message["Subject"] == "Invoice 2026-9"
        assert "Bcc" not in message
        (part,) = list(message.iter_attachments())
        assert part.get_content() == INVOICE_PDF
        # what Postfix stored is what we sent, after its own trace headers
        assert raw.replace(b"\r\n", b"\n").endswith(prepared.data.replace(b"\r\n", b"\n"))


def test_postfix_offers_pipelining_and_we_use_it(mta: RealMailServers) -> None:
    connection = SmtpConnection.open(_settings(mta))
    try:
        assert "PIPELINING" in connection.extensions
        assert connection.encrypted and connection.authenticated
        result = connection.send(
            ALICE, [BOB, "nobody@example.test", ALICE], b"Subject: pipelined\r\n\r\nhello\r\n"
        )
    finally:
        connection.quit()
    assert result.accepted == (BOB, ALICE)
    assert result.refused["nobody@example.test"].code == 550
    assert result.refused["nobody@example.test"].enhanced_status == "5.1.1"
    mta.wait_for_messages(BOB)
    mta.wait_for_messages(ALICE)


def test_all_recipients_refused(mta: RealMailServers) -> None:
    with DeliveryClient.own_smtp(ALICE, _settings(mta)) as client:
        with pytest.raises(RecipientsRefused) as info:
            client.send(
                DocumentEmail(to="ghost@example.test, ghost2@example.test", subject="s", body="b")
            )
        assert set(info.value.refused) == {"ghost@example.test", "ghost2@example.test"}
        # the session goes on after the failed transaction
        assert client.send(DocumentEmail(to=BOB, subject="after", body="b")).accepted == (BOB,)
    (raw,) = mta.wait_for_messages(BOB)
    assert _parse(raw)["Subject"] == "after"


@pytest.mark.parametrize(
    "body",
    [
        b"Subject: smuggle-lf\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.test>\nafter\r\n",
        b"Subject: smuggle-crlf-lf\r\n\r\nbefore\r\n.\nRCPT TO:<alice@example.test>\r\nafter\r\n",
        b"Subject: smuggle-cr\r\n\r\nbefore\r.\rDATA\r\nafter\r\n",
        b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nafter\r\n",
    ],
)
def test_smuggling_attempts_arrive_as_one_intact_message(mta: RealMailServers, body: bytes) -> None:
    connection = SmtpConnection.open(_settings(mta))
    try:
        connection.send(ALICE, [BOB], body)
    finally:
        connection.quit()
    (raw,) = mta.wait_for_messages(BOB)
    content = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    expected = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n", 1)[1]
    assert content == expected
    time.sleep(0.3)  # a smuggled second message would be queued right behind the first
    assert mta.wait_for_messages(ALICE, count=0) == []


def test_smtputf8_to_postfix(mta: RealMailServers) -> None:
    with DeliveryClient.own_smtp(ALICE, _settings(mta)) as client:
        result = client.send(
            DocumentEmail(to=BOB, cc="jürgen@example.test", subject="Grüße", body="Schöne Grüße")
        )
    # Postfix took the SMTPUTF8 transaction and judged the UTF-8 address on its merits.
    # (It cannot hand the message on: Dovecot 2.3's LMTP does not offer SMTPUTF8, so
    # Postfix bounces it after accepting. Nothing for a client to see or do.)
    assert result.accepted == (BOB,)
    assert result.refused["jürgen@example.test"].code == 550
    assert "User unknown" in result.refused["jürgen@example.test"].text


def test_wrong_password(mta: RealMailServers) -> None:
    with pytest.raises(AuthenticationError) as info:
        SmtpConnection.open(_settings(mta, password="wrong-password"))
    assert info.value.reply is not None and info.value.reply.code == 535
    assert info.value.diagnosis.category == Category.AUTH_FAILED
    assert "wrong-password" not in str(info.value)


def test_connection_report_against_postfix(mta: RealMailServers) -> None:
    report = probe_smtp(_settings(mta))
    assert report.ok, report
    assert {"PIPELINING", "CHUNKING", "SMTPUTF8", "ENHANCEDSTATUSCODES"} <= set(report.extensions)
    assert [s.name for s in report.steps][-3:] == ["starttls", "ehlo", "auth"]


def test_implicit_tls_to_the_submission_port(mta: RealMailServers) -> None:
    report = probe_smtp(_settings(mta, Security.IMPLICIT_TLS, port=mta.submission_port))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.EXPECTED_PLAINTEXT
    assert report.alternative is not None and report.alternative.security is Security.STARTTLS


def test_starttls_to_the_implicit_tls_port(mta: RealMailServers) -> None:
    report = probe_smtp(_settings(mta, Security.STARTTLS, port=mta.smtps_port, command_timeout=1.0))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.EXPECTED_IMPLICIT_TLS
    assert report.alternative is not None
    assert report.alternative.security is Security.IMPLICIT_TLS


def test_no_auth_before_starttls(mta: RealMailServers) -> None:
    report = probe_smtp(_settings(mta, Security.NONE, port=mta.submission_port))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.AUTH_REQUIRES_TLS


def test_plain_relay_port_without_login(mta: RealMailServers) -> None:
    settings = _settings(mta, Security.NONE, username=None, password=None)
    with DeliveryClient.own_smtp("app@discard.test", settings) as client:
        assert client.send(DocumentEmail(to=BOB, subject="relay", body="b")).accepted == (BOB,)
    assert _parse(mta.wait_for_messages(BOB)[0])["Subject"] == "relay"
    # a login on the port-25 service is not offered, even over TLS
    report = probe_smtp(_settings(mta, Security.STARTTLS, port=mta.smtp_port))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.AUTH_NOT_OFFERED


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_each_mechanism_postfix_offers(mta: RealMailServers, mechanism: str) -> None:
    connection = SmtpConnection.open(_settings(mta, auth_mechanism=mechanism))
    try:
        assert connection.authenticated
    finally:
        connection.quit()


def test_postfix_certificate_not_trusted_without_its_ca(mta: RealMailServers) -> None:
    report = probe_smtp(_settings(mta, Security.IMPLICIT_TLS, ca_file=None))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.CERTIFICATE_INVALID
    assert report.steps[-1].name == "tls"
