"""Archiving sent mail into the tenant's Sent folder: exactly one copy, failures reported."""

from __future__ import annotations

import datetime as dt

import pytest
from imapclient import IMAPClient

from mailbridge import Category, DeliveryClient, DocumentEmail, ImapSettings
from mailbridge.imap import SentArchiver, files_own_sent_copy
from mailbridge.providers import ProviderRegistry
from mailbridge.testing import FakeImapServer, FakeSmtpServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import USER

WHEN = dt.datetime(2026, 11, 20, 16, 30, tzinfo=dt.UTC)


def _email(**fields: object) -> DocumentEmail:
    values: dict[str, object] = {
        "to": "jane@customer.example",
        "bcc": "books@acme.example",
        "subject": "Invoice 7",
        "body": "Attached.",
        "date": WHEN,
    }
    values.update(fields)
    return DocumentEmail(**values)  # type: ignore[arg-type]


def test_send_archives_one_copy_with_bcc_seen_and_date(
    delivery_client: DeliveryClient, imap_server: FakeImapServer
) -> None:
    result = delivery_client.send(_email())
    assert result.archived is True
    assert result.archive_folder == "Sent" and result.archive_reason is None
    (stored,) = imap_server.messages("Sent", user=USER)
    assert stored.data.startswith(b"Bcc: books@acme.example\r\n")
    assert stored.data.endswith(result.message.data)  # type: ignore[union-attr]
    assert "\\Seen" in stored.flags
    assert stored.internal_date == WHEN
    # archiving again (a retry) finds it by Message-ID and stores nothing new
    again = delivery_client.archive(result)
    assert again.archived is True
    assert len(imap_server.messages("Sent", user=USER)) == 1


@pytest.mark.parametrize(
    ("layout", "folder"),
    [("german", "Gesendet"), ("gmail", "[Gmail]/Sent Mail"), ("dotted", "INBOX.Sent")],
)
def test_sent_folder_is_found_in_every_layout(
    smtp_server: FakeSmtpServer, layout: str, folder: str
) -> None:
    with FakeImapServer(layout=layout, users={USER: "imap-pw"}) as imap:
        with DeliveryClient.own_smtp(
            USER, smtp_server.smtp_settings(), imap=imap.imap_settings()
        ) as client:
            result = client.send(_email())
        assert result.archive_folder == folder
        assert len(imap.messages(folder, user=USER)) == 1


def test_imap_down_then_retried_leaves_exactly_one_copy(
    delivery_client: DeliveryClient, imap_server: FakeImapServer, smtp_server: FakeSmtpServer
) -> None:
    imap_server.login_reply = "NO [UNAVAILABLE] Temporary authentication failure"
    result = delivery_client.send(_email())
    assert result.accepted == ("jane@customer.example", "books@acme.example")  # sent anyway
    assert result.archived is False
    assert "could not be used" in (result.archive_reason or "")
    imap_server.login_reply = None
    retried = delivery_client.archive(result)
    assert retried.archived is True
    assert delivery_client.archive(retried).archived is True
    assert len(imap_server.messages("Sent", user=USER)) == 1
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("quota", "OVERQUOTA"), ("drop", "connection"), ("folder", "does not exist")],
)
def test_archive_failures_are_reported_not_raised(
    smtp_server: FakeSmtpServer, imap_server: FakeImapServer, fault: str, reason: str
) -> None:
    settings = imap_server.imap_settings()
    if fault == "quota":
        imap_server.append_reply = "NO [OVERQUOTA] Quota exceeded"
    elif fault == "drop":
        imap_server.drop_on = "APPEND"
    else:
        settings = imap_server.imap_settings(folder="Ausgang")
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings(), imap=settings) as client:
        result = client.send(_email())
        assert result.archived is False
        assert reason in (result.archive_reason or "")
        imap_server.append_reply = None
        imap_server.drop_on = None
        if fault != "folder":
            assert client.archive(result).archived is True
    assert len(imap_server.messages("Sent", user=USER)) == (0 if fault == "folder" else 1)


def test_servers_that_file_their_own_copy_are_skipped(
    smtp_server: FakeSmtpServer, imap_server: FakeImapServer
) -> None:
    with DeliveryClient.own_smtp(
        USER, smtp_server.smtp_settings(), imap=imap_server.imap_settings(), archive_sent=False
    ) as client:
        result = client.send(_email())
    assert result.archived is None
    assert "files its own copy" in (result.archive_reason or "")
    assert imap_server.messages("Sent", user=USER) == []


ACME = """
[[provider]]
id = "acme"
name = "Acme Mail"
smtp = [{ host = "smtp.acme.example", port = 587, security = "starttls" }]
imap = [{ host = "localhost", port = 993, security = "implicit_tls" }]
files_sent_copy = true
sent_folder = "Postausgang"
"""


def test_the_provider_registry_decides_who_files_its_own_copy() -> None:
    assert files_own_sent_copy("smtp.gmail.com") and files_own_sent_copy("SMTP.Office365.com.")
    assert files_own_sent_copy("smtp-mail.outlook.com")
    assert files_own_sent_copy("smtp.googlemail.com")  # a server alias, never offered
    assert not files_own_sent_copy("mail.acme.example")
    acme = ProviderRegistry.from_toml(ACME)
    assert files_own_sent_copy("smtp.acme.example", acme)
    assert not files_own_sent_copy("smtp.gmail.com", acme)  # no host list besides the registry


@pytest.mark.parametrize("registry", ["acme", "default"])
def test_the_providers_sent_folder_name_is_used(registry: str) -> None:
    """A provider whose Sent folder has an unusual name and no special-use flag."""
    with FakeImapServer(layout="german", users={USER: "pw"}) as server:
        server.create_folder("Postausgang", user=USER)
        archiver = SentArchiver(
            server.imap_settings(host="localhost"),
            registry=ProviderRegistry.from_toml(ACME) if registry == "acme" else None,
        )
        outcome = archiver.archive(b"Subject: x\r\n\r\nx\r\n", message_id="<p@acme.example>")
        archiver.close()
    assert outcome.archived
    assert outcome.folder == ("Postausgang" if registry == "acme" else "Gesendet")


def test_list_folders_and_connection_test(
    delivery_client: DeliveryClient, imap_server: FakeImapServer
) -> None:
    folders = {folder.name: folder.special_use for folder in delivery_client.list_folders()}
    assert folders["Sent"] == "\\Sent" and folders["INBOX"] is None
    report = delivery_client.test_connection()
    assert report.ok and report.imap is not None and report.imap.ok
    assert [s.name for s in report.imap.steps] == ["connect", "login", "folder"]
    assert "IMAP:" in str(report)


def test_connection_test_reports_a_bad_imap_password(
    smtp_server: FakeSmtpServer, imap_server: FakeImapServer
) -> None:
    imap = imap_server.imap_settings(username=USER, password="wrong")
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings(), imap=imap) as client:
        report = client.test_connection()
    assert not report.ok
    assert report.imap is not None and report.imap.diagnosis is not None
    assert report.imap.diagnosis.category == Category.AUTH_FAILED


@pytest.mark.realserver
def test_one_copy_in_dovecots_sent_folder(real_servers: RealMailServers) -> None:
    from mailbridge import SmtpSettings

    smtp = SmtpSettings(
        real_servers.host,
        real_servers.submission_port,
        "starttls",
        username="alice@example.test",
        password="alice-Secret-1",
        ca_file=real_servers.ca_file,
    )
    imap = ImapSettings(
        real_servers.host,
        real_servers.imaps_port,
        "implicit_tls",
        username="alice@example.test",
        password="alice-Secret-1",
        ca_file=real_servers.ca_file,
    )
    with DeliveryClient.own_smtp("alice@example.test", smtp, imap=imap) as client:
        result = client.send(_email(to="bob@example.test", bcc=()))
        assert result.archived is True and result.archive_folder == "Sent"
        assert client.archive(result).archived is True  # a retry: still one copy
    with IMAPClient(
        real_servers.host,
        real_servers.imaps_port,
        ssl=True,
        ssl_context=real_servers.client_ssl_context(),
    ) as check:
        check.login("alice@example.test", "alice-Secret-1")
        check.select_folder("Sent")
        uids = check.search(["HEADER", "Message-ID", result.message_id])
        assert len(uids) == 1
        flags = check.get_flags(uids)[uids[0]]
        assert b"\\Seen" in flags


def test_imap_security_mismatch_suggests_the_working_mode() -> None:
    from mailbridge import Security
    from mailbridge.imap import probe_imap

    with FakeImapServer(tls="starttls", users={USER: "pw"}) as server:
        wrong = server.imap_settings(security=Security.IMPLICIT_TLS)
        report = probe_imap(wrong)
    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.EXPECTED_PLAINTEXT
    assert report.imap_alternative is not None
    assert report.imap_alternative.security is Security.STARTTLS


@pytest.mark.parametrize(
    "message_id", ["<a{3}b@acme.example>", "<a.b+c=d@acme.example>", "<star*pct%@acme.example>"]
)
def test_unusual_message_ids_are_found_again(
    delivery_client: DeliveryClient, imap_server: FakeImapServer, message_id: str
) -> None:
    result = delivery_client.send(_email(message_id=message_id))
    assert result.archived is True
    assert delivery_client.archive(result).archived is True
    assert len(imap_server.messages("Sent", user=USER)) == 1


def test_concurrent_archives_of_one_message_store_one_copy(
    delivery_client: DeliveryClient, imap_server: FakeImapServer
) -> None:
    import threading

    result = delivery_client.send(_email())
    threads = [threading.Thread(target=delivery_client.archive, args=(result,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(imap_server.messages("Sent", user=USER)) == 1
