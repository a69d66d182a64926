"""The importer against a hostile or broken IMAP server: bounded, typed, one bad message only."""

from __future__ import annotations

import base64
import threading
import time

import pytest

from mailbridge import ConnectError, InboxImporter, MailbridgeError, ProtocolError
from mailbridge.imap._bodystructure import MAX_MIME_DEPTH

from ._scripted_imap import ScriptedImap
from .conftest import INVOICE_PDF

ENVELOPE = (
    b'ENVELOPE ("Mon, 30 Nov 2026 10:00:00 +0000" "Invoice" (("S" NIL "s" "supplier.example"))'
    b' NIL NIL NIL NIL NIL NIL "<m@supplier.example>")'
)
PDF_PART = b'("application" "pdf" ("name" "R-%d.pdf") NIL NIL "base64" %d)'
ENCODED = base64.encodebytes(INVOICE_PDF).replace(b"\n", b"\r\n")


def _good(server: ScriptedImap, uid: int) -> None:
    text = b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 1)'
    pdf = PDF_PART % (uid, len(ENCODED))
    server.structures[uid] = b"BODYSTRUCTURE (" + text + pdf + b' "mixed") ' + ENVELOPE
    server.bodies[(uid, "2")] = ENCODED


HOSTILE = {
    "structure-nil": b"BODYSTRUCTURE NIL " + ENVELOPE,
    "structure-atom": b"BODYSTRUCTURE 42 " + ENVELOPE,
    "structure-short": b'BODYSTRUCTURE ("application") ' + ENVELOPE,
    "envelope-short": b'BODYSTRUCTURE ("application" "pdf" NIL NIL NIL "base64" 10) ENVELOPE ("x")',
    "envelope-atom": b'BODYSTRUCTURE ("application" "pdf" NIL NIL NIL "base64" 10) ENVELOPE 7',
    "5000-parentheses": b"BODYSTRUCTURE " + b"(" * 5000 + b")" * 5000 + b" " + ENVELOPE,
    "size-not-a-number": b'BODYSTRUCTURE ("application" "pdf" NIL NIL NIL "base64" "x") '
    + ENVELOPE,
    "forwarded-nil": b'BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7bit" 10 NIL NIL 1) '
    + ENVELOPE,
    "invalid-utf8-name": b'BODYSTRUCTURE ("application" "pdf" ("name" "\xff\xfe.pdf") NIL NIL '
    b'"base64" 10) ' + ENVELOPE,
    "deep-multipart": b"BODYSTRUCTURE "
    + b"(" * (MAX_MIME_DEPTH + 3)
    + b'"application" "pdf" NIL NIL NIL "base64" 10'
    + b') "mixed"' * (MAX_MIME_DEPTH + 3)
    + b" "
    + ENVELOPE,
}


@pytest.mark.parametrize("structure", HOSTILE.values(), ids=HOSTILE.keys())
def test_one_hostile_message_is_a_problem_and_the_others_import(structure: bytes) -> None:
    with ScriptedImap() as server:
        server.search_uids = [1, 2, 3]
        _good(server, 1)
        server.structures[2] = structure
        _good(server, 3)
        batch = InboxImporter(server.settings()).fetch()
    assert [d.filename for d in batch.documents] == ["R-1.pdf", "R-3.pdf"]
    assert all(d.content == INVOICE_PDF for d in batch.documents)
    assert batch.uids == (1, 2, 3)
    assert [uid for uid, _ in batch.problems] == [2]  # reported, never silently dropped


def test_a_message_the_server_does_not_describe_is_reported() -> None:
    with ScriptedImap() as server:
        server.search_uids = [1, 2]
        _good(server, 1)  # 2 is missing from the FETCH answer
        batch = InboxImporter(server.settings()).fetch()
    assert len(batch.documents) == 1
    assert batch.problems == ((2, "the server did not describe this message (deleted meanwhile?)"),)


@pytest.mark.parametrize(
    "lines",
    [
        [b"* 1 EXISTS"],
        [b"* 1 EXISTS", b"* OK [UIDVALIDITY 0] zero is not a UIDVALIDITY"],
        [b"* 1 EXISTS", b"* OK [UIDVALIDITY x] not a number"],
    ],
    ids=["missing", "zero", "not-a-number"],
)
def test_a_select_without_a_valid_uidvalidity_is_a_typed_error(lines: list[bytes]) -> None:
    with ScriptedImap() as server:
        server.select_lines = lines
        with pytest.raises(ProtocolError, match="SELECT") as caught:
            InboxImporter(server.settings()).fetch()
    assert isinstance(caught.value, MailbridgeError)


def test_a_part_larger_than_declared_is_cut_off_at_the_wire() -> None:
    with ScriptedImap() as server:
        server.search_uids = [1]
        _good(server, 1)
        server.structures[1] = server.structures[1].replace(b"%d" % len(ENCODED), b"40")
        server.bodies[(1, "2")] = b"A" * 1_000_000  # declared as 40 bytes
        batch = InboxImporter(server.settings()).fetch()
        sent = server.sent_body_bytes
    assert batch.documents == ()
    assert batch.problems == ((1, "R-1.pdf: larger than the 40 bytes declared"),)
    assert sent <= 2 * 40 + 4096 + 1  # asked for no more than that


@pytest.mark.parametrize("declared", ["honest", "missing"])
def test_max_part_bytes_is_enforced_before_downloading(declared: str) -> None:
    big = base64.encodebytes(b"%PDF-1.4\n" + b"x" * 300_000).replace(b"\n", b"\r\n")
    with ScriptedImap() as server:
        server.search_uids = [1]
        _good(server, 1)
        if declared == "honest":
            server.structures[1] = server.structures[1].replace(
                b"%d" % len(ENCODED), b"%d" % len(big)
            )
        else:
            server.structures[1] = server.structures[1].replace(b"%d" % len(ENCODED), b"NIL")
        server.bodies[(1, "2")] = big
        batch = InboxImporter(server.settings(), max_part_bytes=100_000).fetch()
        sent = server.sent_body_bytes
    assert batch.documents == ()
    ((uid, text),) = batch.problems
    assert uid == 1 and "over the limit of 100000 bytes" in text
    if declared == "honest":
        assert sent == 0  # refused from BODYSTRUCTURE's size alone
    else:
        assert sent <= 100_000 * 4 // 3 * 78 // 76 + 4096 + 8  # at most one base64 limit


def test_exists_announced_before_the_idle_continuation_wakes_the_watch() -> None:
    with ScriptedImap() as server:
        server.select_lines = [b"* 0 EXISTS", b"* OK [UIDVALIDITY 7] ok", b"* OK [UIDNEXT 1] ok"]
        server.on_idle = b"* 1 EXISTS\r\n"  # the new mail, reported before "+ idling"
        server.delivered_on_idle = [1]
        _good(server, 1)
        stop = threading.Event()
        batches = InboxImporter(server.settings()).watch(stop=stop, max_seconds=20, idle_seconds=8)
        started = time.monotonic()
        batch = next(batches)
        waited = time.monotonic() - started
        stop.set()
        assert list(batches) == []
    assert [d.filename for d in batch.documents] == ["R-1.pdf"]
    assert waited < 3  # not after a reconnect pause, nor after idle_seconds


def test_an_unreadable_search_answer_is_a_typed_error() -> None:
    with ScriptedImap() as server:
        server.search_line = b"* SEARCH 1 (2 3"
        with pytest.raises(ProtocolError, match="SEARCH"):
            InboxImporter(server.settings()).fetch()


@pytest.mark.parametrize("command", [b"UID SEARCH", b"UID FETCH"])
def test_a_connection_lost_mid_import_is_a_typed_error(command: bytes) -> None:
    with ScriptedImap() as server:
        server.search_uids = [1]
        _good(server, 1)
        server.drop_on = command
        with pytest.raises(ConnectError) as caught:
            InboxImporter(server.settings()).fetch()
    assert caught.value.temporary
