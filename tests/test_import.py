"""Importing incoming invoices exactly once, from FakeImapServer and from Dovecot."""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest

from mailbridge import (
    Attachment,
    Checkpoint,
    DocumentEmail,
    DocumentKind,
    ImapSettings,
    ImportBatch,
    InboxImporter,
    SmtpSettings,
)
from mailbridge._addresses import parse_mailbox
from mailbridge.composer import compose
from mailbridge.imap import close_imap, detect_kind, open_imap
from mailbridge.testing import FakeImapServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import INVOICE_PDF, USER, alice_imap

UBL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Invoice xmlns="urn:oasis:names:specification:'
    b'ubl:schema:xsd:Invoice-2"><ID>R-17</ID></Invoice>'
)
UBL_CREDIT = (
    b'<CreditNote xmlns="urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2">'
    b"<ID>G-2</ID></CreditNote>"
)
CII = (
    b'<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:'
    b'CrossIndustryInvoice:100"><rsm:ExchangedDocument/></rsm:CrossIndustryInvoice>'
)
SUPPLIER = parse_mailbox("from", "Supplier AG <billing@supplier.example>")


def _mail(subject: str, *attachments: Attachment) -> bytes:
    email = DocumentEmail(
        to=USER, subject=subject, body="Please find attached.", attachments=attachments
    )
    return compose(email, sender=SUPPLIER, author=SUPPLIER).data


MIXED = [
    _mail("Invoice 17", Attachment("R-17.pdf", INVOICE_PDF), Attachment("R-17.xml", UBL)),
    _mail("Newsletter"),
    _mail("Credit note", Attachment("gutschrift.dat", UBL_CREDIT)),  # recognised by content
    _mail("ZUGFeRD", Attachment("factur-x.xml", CII)),
    _mail("Photo", Attachment("photo.jpg", b"\xff\xd8\xff\xe0 not a document")),
    _mail("Random XML", Attachment("config.xml", b"<settings><a/></settings>")),
]


def test_detect_kind_by_content() -> None:
    assert detect_kind(INVOICE_PDF) == DocumentKind.PDF
    assert detect_kind(UBL) == DocumentKind.UBL_INVOICE
    assert detect_kind(UBL_CREDIT) == DocumentKind.UBL_CREDIT_NOTE
    assert detect_kind(CII) == DocumentKind.CII
    assert detect_kind(b"<a/>") == DocumentKind.XML
    assert detect_kind(b"hello") is None
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>'
    )
    assert detect_kind(bomb) is None  # entities and DTDs are refused


def _check_mixed_import(importer: InboxImporter) -> Checkpoint:
    batch = importer.fetch()
    kinds = sorted((d.filename, d.kind) for d in batch.documents)
    assert kinds == sorted(
        [
            ("R-17.pdf", DocumentKind.PDF),
            ("R-17.xml", DocumentKind.UBL_INVOICE),
            ("gutschrift.dat", DocumentKind.UBL_CREDIT_NOTE),
            ("factur-x.xml", DocumentKind.CII),
            ("config.xml", DocumentKind.XML),
        ]
    )
    pdf = next(d for d in batch.documents if d.kind == DocumentKind.PDF)
    assert pdf.content == INVOICE_PDF
    assert pdf.sender == "billing@supplier.example" and pdf.subject == "Invoice 17"
    assert pdf.message_id and pdf.uid and pdf.uidvalidity
    assert batch.messages_scanned == len(MIXED)
    # nothing is marked until commit: fetching again gives the same documents
    assert len(importer.fetch().documents) == len(batch.documents)
    checkpoint = importer.commit(batch)
    again = importer.fetch(checkpoint)
    assert again.documents == () and again.messages_scanned == 0
    # even without the checkpoint, the keyword keeps them from coming back
    assert importer.fetch().documents == ()
    return checkpoint


def test_import_mixed_mail_exactly_once_from_the_fake() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        for raw in MIXED:
            server.seed("INBOX", raw, user=USER)
        importer = InboxImporter(server.imap_settings(), batch_size=2)
        checkpoint = _check_mixed_import(importer)
        server.seed("INBOX", _mail("Invoice 18", Attachment("R-18.pdf", INVOICE_PDF)), user=USER)
        batch = importer.run(checkpoint)
        assert [d.filename for d in batch.documents] == ["R-18.pdf"]
        assert batch.checkpoint.last_uid > checkpoint.last_uid


def test_uidvalidity_change_does_not_import_twice() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        for raw in MIXED[:2]:
            server.seed("INBOX", raw, user=USER)
        importer = InboxImporter(server.imap_settings())
        first = importer.run()
        assert len(first.documents) == 2
        server.change_uidvalidity("INBOX")
        server.seed("INBOX", _mail("Invoice 19", Attachment("R-19.pdf", INVOICE_PDF)), user=USER)
        second = importer.run(first.checkpoint)
        assert second.uidvalidity_changed
        assert [d.filename for d in second.documents] == ["R-19.pdf"]


def test_move_to_a_folder_instead_of_marking() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        server.create_folder("Imported")
        server.seed("INBOX", MIXED[0], user=USER)
        importer = InboxImporter(server.imap_settings(), mark=None, move_to="Imported")
        assert len(importer.run().documents) == 2
        assert server.messages("INBOX", user=USER) == []
        assert len(server.messages("Imported", user=USER)) == 1


@pytest.mark.realserver
def test_import_from_dovecot_exactly_once(real_servers: RealMailServers) -> None:
    from mailbridge import DeliveryClient

    real_servers.clear_mailboxes()
    smtp = SmtpSettings(
        real_servers.host,
        real_servers.submission_port,
        "starttls",
        username="bob@example.test",
        password="bob-Secret-2",
        ca_file=real_servers.ca_file,
    )
    with DeliveryClient.own_smtp("bob@example.test", smtp) as sender:
        for raw in MIXED:
            message = compose(
                DocumentEmail(to="alice@example.test", subject="x", body="x"),
                sender=SUPPLIER,
                author=SUPPLIER,
            )
            sender.transport.deliver(
                type(message)(raw, "bob@example.test", ("alice@example.test",), "<x@y>")
            )
    real_servers.wait_for_messages("alice@example.test", count=len(MIXED))
    imap = ImapSettings(
        real_servers.host,
        real_servers.imap_port,
        "starttls",
        username="alice@example.test",
        password="alice-Secret-1",
        ca_file=real_servers.ca_file,
    )
    _check_mixed_import(InboxImporter(imap))


@pytest.mark.realserver
def test_import_1000_messages_timing(real_servers: RealMailServers) -> None:
    """Not a timed assertion: prints the figure for the closing note."""
    with FakeImapServer(users={USER: "pw"}) as server:
        for n in range(1000):
            server.seed("INBOX", MIXED[n % len(MIXED)], user=USER)
        started = time.perf_counter()
        batch = InboxImporter(server.imap_settings()).run()
        elapsed = time.perf_counter() - started
    assert batch.messages_scanned == 1000
    print(f"\nimported {len(batch.documents)} documents from 1000 messages in {elapsed:.2f} s")


def test_watch_imports_new_mail_as_it_arrives() -> None:
    import threading

    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", MIXED[0], user=USER)
        importer = InboxImporter(server.imap_settings())
        stop = threading.Event()
        batches = importer.watch(stop=stop, max_seconds=10, idle_seconds=5)
        first = next(batches)
        assert len(first.documents) == 2
        timer = threading.Timer(
            0.3,
            lambda: server.seed(
                "INBOX", _mail("Late", Attachment("L.pdf", INVOICE_PDF)), user=USER
            ),
        )
        timer.start()
        started = time.monotonic()
        second = next(batches)
        assert time.monotonic() - started < 5  # woken by IDLE, not by the timeout
        assert [d.filename for d in second.documents] == ["L.pdf"]
        stop.set()
        assert list(batches) == []
        timer.join()


def test_watch_sees_mail_that_arrived_between_fetch_and_idle() -> None:
    """Mail delivered right after a fetch, before IDLE starts, wakes the watch at once."""
    import threading

    class ArrivingAfterFetch(InboxImporter):
        fetches = 0

        def fetch(self, checkpoint: Checkpoint | None = None) -> ImportBatch:
            batch = super().fetch(checkpoint)
            self.fetches += 1
            if self.fetches == 1:  # the window: after the SEARCH, before the next SELECT
                server.seed("INBOX", _mail("Gap", Attachment("G.pdf", INVOICE_PDF)), user=USER)
            return batch

    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", MIXED[0], user=USER)
        importer = ArrivingAfterFetch(server.imap_settings())
        stop = threading.Event()
        batches = importer.watch(stop=stop, max_seconds=20, idle_seconds=8)
        assert len(next(batches).documents) == 2
        started = time.monotonic()
        second = next(batches)
        waited = time.monotonic() - started
        stop.set()
        assert list(batches) == []
    assert [d.filename for d in second.documents] == ["G.pdf"]
    assert waited < 3  # at once, not after idle_seconds


def test_a_broken_message_is_reported_not_blocking() -> None:
    broken = (
        b"From: x@y.example\r\nSubject: =?utf-8?b?a?=\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename*=x-bogus''a%20b.pdf\r\n\r\n"
        b"JVBERi0xLjQK\r\n--b--\r\n"
    )
    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", broken, user=USER)
        server.seed("INBOX", MIXED[0], user=USER)
        batch = InboxImporter(server.imap_settings()).run()
    assert len(batch.documents) == 3  # the broken one's PDF too, with its odd name decoded
    assert batch.messages_scanned == 2


def test_a_large_document_arrives_whole_in_windows() -> None:
    """Parts over one FETCH window (4 MiB) are read in several partial FETCHes."""
    from mailbridge.imap._part_fetch import WINDOW

    big = INVOICE_PDF + bytes(range(256)) * (WINDOW // 128)  # about 11 MiB in base64
    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", _mail("Big", Attachment("big.pdf", big)), user=USER)
        batch = InboxImporter(server.imap_settings()).fetch()
    assert batch.problems == ()
    ((name, content),) = [(d.filename, d.content) for d in batch.documents]
    assert name == "big.pdf" and content == big


def test_oversized_parts_are_reported_not_silently_dropped() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", MIXED[0], user=USER)
        batch = InboxImporter(server.imap_settings(), max_part_bytes=100).fetch()
    assert any("over the limit" in text for _, text in batch.problems)


def _forwarded(depth: int = 1) -> bytes:
    """An invoice forwarded `depth` times, each time as a message/rfc822 attachment."""
    message = EmailMessage()
    message["From"] = "invoices@supplier.example"
    message["Subject"] = "Invoice R-21"
    message.set_content("The invoice is attached.")
    message.add_attachment(INVOICE_PDF, maintype="application", subtype="pdf", filename="R-21.pdf")
    for n in range(depth):
        outer = EmailMessage()
        outer["From"] = "Boss <boss@acme.example>"
        outer["Subject"] = "Fwd: " * (n + 1) + "Invoice R-21"
        outer.set_content("Please book this.")
        outer.add_attachment(message)
        message = outer
    return message.as_bytes().replace(b"\n", b"\r\n")


def _check_forwarded(batch: ImportBatch) -> None:
    assert batch.problems == ()
    assert [(d.filename, d.kind, d.content) for d in batch.documents] == [
        ("R-21.pdf", DocumentKind.PDF, INVOICE_PDF),
        ("R-21.pdf", DocumentKind.PDF, INVOICE_PDF),
    ]
    assert {d.subject for d in batch.documents} == {"Fwd: Invoice R-21", "Fwd: Fwd: Invoice R-21"}


def test_pdfs_in_forwarded_messages_are_imported_from_the_fake() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", _forwarded(1), user=USER)
        server.seed("INBOX", _forwarded(2), user=USER)
        _check_forwarded(InboxImporter(server.imap_settings()).fetch())


@pytest.mark.realserver
def test_pdfs_in_forwarded_messages_are_imported_from_dovecot(
    real_servers: RealMailServers,
) -> None:
    real_servers.clear_mailboxes()
    settings = alice_imap(real_servers)
    client = open_imap(settings)
    try:
        client.append("INBOX", _forwarded(1))
        client.append("INBOX", _forwarded(2))
    finally:
        close_imap(client)
    _check_forwarded(InboxImporter(settings).fetch())


def test_commit_after_a_uidvalidity_change_refuses() -> None:
    from mailbridge import UidValidityChanged

    with FakeImapServer(users={USER: "pw"}) as server:
        server.seed("INBOX", MIXED[0], user=USER)
        importer = InboxImporter(server.imap_settings())
        batch = importer.fetch()
        server.change_uidvalidity("INBOX")
        with pytest.raises(UidValidityChanged):
            importer.commit(batch)
        again = importer.run(batch.checkpoint)  # nothing was marked: imported now, once
        assert again.uidvalidity_changed and len(again.documents) == 2
        assert importer.run(again.checkpoint).documents == ()
