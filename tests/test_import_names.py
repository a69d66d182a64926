"""Imported file names: safe to use in a directory, the sender's original kept apart."""

from __future__ import annotations

import base64
import unicodedata

import pytest

from mailbridge import ImportBatch, InboxImporter
from mailbridge.imap import close_imap, open_imap
from mailbridge.imap._filenames import MAX_FILENAME_BYTES, safe_filename
from mailbridge.testing import FakeImapServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import INVOICE_PDF, USER, alice_imap

HOSTILE_NAMES = {
    "../../../etc/cron.d/x": "x",
    "..\\..\\Windows\\System32\\evil.pdf": "evil.pdf",
    "/etc/passwd": "passwd",
    ".bashrc": "bashrc",
    "...": None,
    "./": None,
    "CON": "_CON",
    "con.pdf": "_con.pdf",
    "LPT1.xml": "_LPT1.xml",
    "COM9 .pdf": "_COM9 .pdf",
    "invoice\u202efdp.exe": "invoicefdp.exe",  # RIGHT-TO-LEFT OVERRIDE dropped
    "in\u200bvoice.pdf": "invoice.pdf",  # zero-width space dropped
    "a\r\nb\x00c\x1b.pdf": "abc.pdf",
    'in<v>o:i"c|e?*.pdf': "in_v_o_i_c_e__.pdf",
    "  invoice .pdf.  ": "invoice .pdf",
    "tab\tname.pdf": "tabname.pdf",
    "Rechnung\u0308.pdf": unicodedata.normalize("NFC", "Rechnung\u0308.pdf"),
    "": None,
}


@pytest.mark.parametrize(("original", "expected"), HOSTILE_NAMES.items())
def test_hostile_names_become_one_plain_name(original: str, expected: str | None) -> None:
    assert safe_filename(original, "document-1-1.pdf") == (expected or "document-1-1.pdf")


def test_long_names_are_cut_keeping_the_extension() -> None:
    for stem in ("a" * 5000, "ü" * 5000, "😀" * 5000):
        name = safe_filename(stem + ".pdf", "fallback.pdf")
        assert name.endswith(".pdf") and name.startswith(stem[0])
        assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert len(safe_filename("x." + "y" * 500, "f").encode()) <= MAX_FILENAME_BYTES


def _mail(disposition: str) -> bytes:
    return (
        b"From: s@supplier.example\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        + disposition.encode()
        + b"\r\n\r\n"
        + base64.encodebytes(INVOICE_PDF).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )


DISPOSITIONS = [
    'Content-Disposition: attachment; filename="../../../etc/cron.d/x"',
    'Content-Disposition: attachment; filename="..\\\\..\\\\boot.ini"',
    "Content-Disposition: attachment; filename*=utf-8''..%2F..%2Frechnung%E2%80%AE.pdf",
    "Content-Disposition: attachment;\r\n filename*0*=utf-8''Rechnung%20M%C3%A4rz;"
    '\r\n filename*1="-2026.pdf"',
    'Content-Disposition: attachment; filename="=?utf-8?q?Gutschrift_=C3=BC.pdf?="',
    'Content-Disposition: attachment; filename="=?utf-8?q?=2E=2E=2Fx=0D=0A.pdf?="',
    "Content-Disposition: attachment",
]


def _check_names(batch: ImportBatch) -> None:
    assert batch.problems == ()
    names = [(d.filename, d.original_filename) for d in batch.documents]
    assert names[0] == ("x", "../../../etc/cron.d/x")
    assert names[1] == ("boot.ini", "..\\..\\boot.ini")
    assert names[2] == ("rechnung.pdf", "../../rechnung\u202e.pdf")  # RFC 2231 decoded first
    assert names[3] == ("Rechnung März-2026.pdf", "Rechnung März-2026.pdf")  # continuations
    assert names[4] == ("Gutschrift ü.pdf", "Gutschrift ü.pdf")  # RFC 2047 decoded
    assert names[5] == ("x.pdf", "../x\r\n.pdf")
    uid = batch.documents[6].uid
    assert names[6] == (f"document-{uid}-1.pdf", None)  # no name given: a fallback
    for document in batch.documents:
        assert "/" not in document.filename and "\\" not in document.filename
        assert not document.filename.startswith(".")


def test_imported_documents_carry_a_safe_name_and_the_original() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        for disposition in DISPOSITIONS:
            server.seed("INBOX", _mail(disposition), user=USER)
        _check_names(InboxImporter(server.imap_settings()).fetch())


@pytest.mark.realserver
def test_names_as_dovecot_describes_them(real_servers: RealMailServers) -> None:
    real_servers.clear_mailboxes()
    settings = alice_imap(real_servers)
    client = open_imap(settings)
    try:
        for disposition in DISPOSITIONS:
            client.append("INBOX", _mail(disposition))
    finally:
        close_imap(client)
    _check_names(InboxImporter(settings).fetch())
