"""Tests of the real Postfix + Dovecot harness, with stdlib clients and verifying TLS only."""

from __future__ import annotations

import base64
import imaplib
import os
import smtplib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.testing.realservers import RealMailServers, RealServerError, availability

from .conftest import outside_basetemp

AVAILABLE, REASON = availability()
if not AVAILABLE:
    pytest.skip(REASON, allow_module_level=True)

pytestmark = pytest.mark.realserver

ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture(scope="module")
def servers() -> Iterator[RealMailServers]:
    with outside_basetemp("mailbridge-realservers-") as directory:
        with RealMailServers(directory) as instance:
            yield instance


def make_message(sender: str, recipient: str, subject: str) -> bytes:
    """A raw message with 8-bit text and a line starting with a dot (SMTP dot-stuffing)."""
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{uuid.uuid4()}@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "Body line: Grüße aus Köln\r\n.a line starting with a dot\r\nlast line\r\n"
    ).encode()


def assert_delivered_intact(delivered: bytes, sent: bytes) -> None:
    """Dovecot stores LF line ends and prepends trace headers; the rest must be byte-identical."""
    assert delivered.endswith(sent.replace(b"\r\n", b"\n"))


def instance_processes(directory: Path) -> dict[int, str]:
    """Live processes (pid -> name) whose working directory lies inside directory."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if state != "Z" and (cwd == directory or directory in cwd.parents):
            found[int(pid)] = name
    return found


def test_starttls_submission_delivers_intact(servers: RealMailServers) -> None:
    servers.clear_mailboxes()
    subject = f"STARTTLS submission {uuid.uuid4()}"
    message = make_message(BOB, ALICE, subject)
    with smtplib.SMTP(servers.host, servers.submission_port, timeout=10) as smtp:
        smtp.starttls(context=servers.client_ssl_context())
        smtp.login(BOB, servers.users[BOB])
        assert smtp.sendmail(BOB, [ALICE], message, mail_options=["BODY=8BITMIME"]) == {}
    [delivered] = servers.wait_for_messages(ALICE)
    assert f"Subject: {subject}\n".encode() in delivered
    assert "Body line: Grüße aus Köln\n".encode() in delivered
    assert_delivered_intact(delivered, message)


def test_implicit_tls_submission(servers: RealMailServers) -> None:
    servers.clear_mailboxes()
    message = make_message(ALICE, BOB, "implicit TLS")
    context = servers.client_ssl_context()
    with smtplib.SMTP_SSL(servers.host, servers.smtps_port, context=context, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login(ALICE, servers.users[ALICE])
        assert smtp.sendmail(ALICE, [BOB], message, mail_options=["BODY=8BITMIME"]) == {}
    [delivered] = servers.wait_for_messages(BOB)
    assert_delivered_intact(delivered, message)


def test_wrong_password_fails_fast(servers: RealMailServers) -> None:
    credentials = base64.b64encode(f"\0{ALICE}\0wrong-password".encode()).decode()
    with smtplib.SMTP(servers.host, servers.submission_port, timeout=10) as smtp:
        smtp.starttls(context=servers.client_ssl_context())
        smtp.ehlo()
        for _ in range(3):  # repeated failures must not be slowed down by an auth penalty
            started = time.monotonic()
            code, _ = smtp.docmd("AUTH", f"PLAIN {credentials}")
            assert code == 535
            assert time.monotonic() - started < 2.0


def test_submission_offers_auth_only_after_starttls(servers: RealMailServers) -> None:
    with smtplib.SMTP(servers.host, servers.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        code, _ = smtp.mail(ALICE)
        assert code == 530  # must issue STARTTLS first
        smtp.rset()
        smtp.starttls(context=servers.client_ssl_context())
        smtp.ehlo()
        assert smtp.has_extn("auth")


def test_plain_port_accepts_unauthenticated_local_mail(servers: RealMailServers) -> None:
    servers.clear_mailboxes()
    message = make_message("someone@elsewhere.test", ALICE, "plain port")
    with smtplib.SMTP(servers.host, servers.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        assert smtp.sendmail("someone@elsewhere.test", [ALICE], message) == {}
    [delivered] = servers.wait_for_messages(ALICE)
    assert_delivered_intact(delivered, message)


def test_discard_domain_accepts_mail(servers: RealMailServers) -> None:
    servers.clear_mailboxes()
    sink = f"sink@{servers.discard_domain}"
    with smtplib.SMTP(servers.host, servers.smtp_port, timeout=10) as smtp:
        assert smtp.sendmail(ALICE, [sink], make_message(ALICE, sink, "discarded")) == {}
    with smtplib.SMTP(servers.host, servers.submission_port, timeout=10) as smtp:
        smtp.starttls(context=servers.client_ssl_context())
        smtp.login(ALICE, servers.users[ALICE])
        assert smtp.sendmail(ALICE, [sink], make_message(ALICE, sink, "discarded")) == {}


def assert_sent_folder(imap: imaplib.IMAP4) -> None:
    status, folders = imap.list()
    assert status == "OK"
    assert any(b"\\Sent" in line for line in folders if isinstance(line, bytes))


def test_imap_implicit_tls_and_starttls(servers: RealMailServers) -> None:
    context = servers.client_ssl_context()
    with imaplib.IMAP4_SSL(servers.host, servers.imaps_port, ssl_context=context) as imap:
        assert imap.login(ALICE, servers.users[ALICE])[0] == "OK"
        assert_sent_folder(imap)
    with imaplib.IMAP4(servers.host, servers.imap_port) as imap:
        assert imap.starttls(ssl_context=context)[0] == "OK"
        assert imap.login(BOB, servers.users[BOB])[0] == "OK"
        assert_sent_folder(imap)


def test_stop_leaves_no_processes(server_dir: Path) -> None:
    tmp_path = server_dir
    crashed = RealMailServers(tmp_path)
    crashed.start()  # and never stopped, like a test run that was killed
    leftovers = instance_processes(tmp_path.resolve())
    instance = RealMailServers(tmp_path)
    started = time.monotonic()
    instance.start()  # takes over the directory from the leftover instance
    assert time.monotonic() - started < 5.0
    running = instance_processes(tmp_path.resolve())
    assert {"master", "dovecot"} <= set(running.values())
    assert not leftovers.keys() & running.keys()
    with smtplib.SMTP(instance.host, instance.smtp_port, timeout=10) as smtp:
        assert smtp.noop()[0] == 250
    instance.stop()
    assert instance_processes(tmp_path.resolve()) == {}
    instance.stop()  # idempotent
    crashed.stop()


def test_wait_for_messages_times_out_with_the_logs(servers: RealMailServers) -> None:
    servers.clear_mailboxes()
    with pytest.raises(RealServerError, match=r"(?s)0 of 1 message.*--- postfix\.log ---"):
        servers.wait_for_messages(BOB, timeout=0.2)
