"""Archiving many messages at once: one SEARCH and one MULTIAPPEND per batch, one copy each."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailbridge.imap import ArchiveOutcome, SentArchiver
from mailbridge.testing import FakeImapServer
from mailbridge.testing.realservers import RealMailServers

from ._scripted_imap import ScriptedImap
from .conftest import ALICE, ALICE_PASSWORD, USER, alice_imap


def _message(n: int, run: str) -> tuple[bytes, str]:
    message_id = f"<{run}.{n}@acme.example>"
    data = (
        f"From: billing@acme.example\r\nTo: c{n}@customer.example\r\n"
        f"Subject: Invoice {n}\r\nDate: Fri, 20 Nov 2026 16:30:00 +0000\r\n"
        f"Message-ID: {message_id}\r\n\r\nInvoice {n}\r\n"
    ).encode()
    return data, message_id


def _archive_all(
    archiver: SentArchiver, messages: list[tuple[bytes, str]], threads: int = 8
) -> list[ArchiveOutcome]:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(archiver.archive, data, message_id=message_id)
            for data, message_id in messages
        ]
        return [future.result(timeout=30) for future in futures]


@pytest.fixture
def appends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the MULTIAPPEND batches sent (1 for each single APPEND), refused ones too."""
    sizes: list[int] = []
    multiappend, append = IMAPClient.multiappend, IMAPClient.append

    def counting_multiappend(self: IMAPClient, folder: str, msgs: object) -> object:
        items = list(msgs)  # type: ignore[call-overload]
        sizes.append(len(items))
        return multiappend(self, folder, items)

    def counting_append(self: IMAPClient, *args: object, **kwargs: object) -> object:
        sizes.append(1)
        return append(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(IMAPClient, "multiappend", counting_multiappend)
    monkeypatch.setattr(IMAPClient, "append", counting_append)
    return sizes


def _stored_ids(server: FakeImapServer) -> dict[int, bytes]:
    stored = {}
    for message in server.messages("Sent", user=USER):
        header = message.data.split(b"\r\n\r\n", 1)[0]
        (line,) = [h for h in header.split(b"\r\n") if h.startswith(b"Message-ID: ")]
        stored[message.uid] = line.removeprefix(b"Message-ID: ")
    return stored


@pytest.mark.parametrize("multiappend", [True, False], ids=["multiappend", "append"])
def test_concurrent_archives_are_stored_together_once_each(
    multiappend: bool, appends: list[int]
) -> None:
    run = uuid.uuid4().hex
    with FakeImapServer(users={USER: "pw"}) as server:
        if not multiappend:
            server.omit_capabilities = {"MULTIAPPEND"}
        server.stall_seconds = 0.02  # batches form while one is being stored
        archiver = SentArchiver(server.imap_settings())
        messages = [_message(n, run) for n in range(24)]
        outcomes = _archive_all(archiver, messages)
        archiver.close()
        stored = _stored_ids(server)
    assert all(o.archived and not o.already_there for o in outcomes)
    assert len(stored) == 24
    for (_, message_id), outcome in zip(messages, outcomes, strict=True):
        assert outcome.uid is not None
        assert stored[outcome.uid] == message_id.encode()  # each UID is its own message's
    assert sum(appends) == 24
    if multiappend:
        assert max(appends) > 1  # at least one batch went out as one MULTIAPPEND
    else:
        assert appends == [1] * 24


def test_messages_already_archived_are_found_in_the_same_batch(appends: list[int]) -> None:
    run = uuid.uuid4().hex
    with FakeImapServer(users={USER: "pw"}) as server:
        archiver = SentArchiver(server.imap_settings())
        messages = [_message(n, run) for n in range(10)]
        first = [archiver.archive(data, message_id=mid) for data, mid in messages[::2]]
        server.stall_seconds = 0.02
        again = _archive_all(archiver, messages + messages[:3])
        archiver.close()
        stored = _stored_ids(server)
    assert len(stored) == 10  # nothing twice, whatever the order and overlap
    for n, outcome in enumerate(again[:10]):
        assert outcome.archived
        if n % 2 == 0:
            assert outcome.already_there and outcome.uid == first[n // 2].uid
    for n, outcome in enumerate(again):
        assert outcome.uid is not None
        assert stored[outcome.uid] == messages[n % 10][1].encode()


def _queued_behind_a_slow_leader(
    archiver: SentArchiver, server: FakeImapServer, batch: list[tuple[bytes, str]]
) -> list[ArchiveOutcome]:
    """Archive `batch` while another archive holds the session: it forms one batch."""
    server.stall_seconds = 0.15
    leader = concurrent.futures.ThreadPoolExecutor(1)
    data, message_id = _message(999, uuid.uuid4().hex)
    first = leader.submit(archiver.archive, data, message_id=message_id)
    time.sleep(0.1)  # the leader is inside its SEARCH now
    outcomes = _archive_all(archiver, batch, threads=len(batch))
    first.result(timeout=30)
    leader.shutdown()
    server.stall_seconds = 0.0
    return outcomes


def test_a_multiappend_answered_no_stores_nothing_and_says_so(appends: list[int]) -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        archiver = SentArchiver(server.imap_settings())
        archiver.archive(*_message(0, "warm")[:1], message_id="<warm@x>")
        server.append_reply = "NO [OVERQUOTA] Quota exceeded"
        outcomes = _queued_behind_a_slow_leader(
            archiver, server, [_message(n, uuid.uuid4().hex) for n in range(3)]
        )
        archiver.close()
        assert len(server.messages("Sent", user=USER)) == 1  # the warm-up only
    for outcome in outcomes:
        assert not outcome.archived and "Quota exceeded" in (outcome.reason or "")
    assert sum(appends) == 1 + 1 + 3  # warm-up, leader, the three: each uploaded once


@pytest.mark.parametrize(
    "capabilities",
    ["IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS", "IMAP4rev1 MULTIAPPEND UIDPLUS", "IMAP4rev1"],
    ids=["multiappend-literal+", "multiappend", "append"],
)
def test_a_refused_message_is_uploaded_once(capabilities: str) -> None:
    """Cyrus answered a one-message MULTIAPPEND "NO [OVERQUOTA]": the same upload came again."""
    with ScriptedImap(capabilities) as server:
        server.append_reply = b"NO [OVERQUOTA] Over quota"
        archiver = SentArchiver(server.settings())
        outcome = archiver.archive(b"x" * 274_000, message_id="<big@acme.example>")
        archiver.close()
        uploads = server.appends
    assert uploads == 1
    assert not outcome.archived
    assert (outcome.reason or "").startswith("the IMAP server refused: ")
    assert (outcome.reason or "").endswith("[OVERQUOTA] Over quota")


def _no_limit(self: IMAPClient, folder: str, msgs: object) -> object:
    return ("NO", [b"[LIMIT] too many messages at once"])  # as imaplib returns a NO


def _bad(self: IMAPClient, folder: str, msgs: object) -> object:
    raise IMAPClientError("APPEND command error: BAD [b'MULTIAPPEND is not supported']")


@pytest.mark.parametrize("refuse", [_no_limit, _bad], ids=["no-limit", "bad"])
def test_a_batch_refused_for_its_form_falls_back_to_single_appends(
    monkeypatch: pytest.MonkeyPatch, refuse: object
) -> None:
    monkeypatch.setattr(IMAPClient, "multiappend", refuse)
    run = uuid.uuid4().hex
    with FakeImapServer(users={USER: "pw"}) as server:
        server.omit_capabilities = {"LITERAL+"}  # the leader's one message: a plain APPEND
        archiver = SentArchiver(server.imap_settings())
        outcomes = _queued_behind_a_slow_leader(
            archiver, server, [_message(n, run) for n in range(6)]
        )
        archiver.close()
        stored = _stored_ids(server)
    assert len(stored) == 7
    for n, outcome in enumerate(outcomes):
        assert outcome.archived and stored[outcome.uid] == f"<{run}.{n}@acme.example>".encode()  # type: ignore[index]


def test_twins_in_one_batch_share_one_copy(appends: list[int]) -> None:
    run = uuid.uuid4().hex
    a, b = _message(1, run), _message(2, run)
    with FakeImapServer(users={USER: "pw"}) as server:
        archiver = SentArchiver(server.imap_settings())
        outcomes = _queued_behind_a_slow_leader(archiver, server, [a, a, b, a])
        archiver.close()
        stored = _stored_ids(server)
    assert sorted(stored.values()).count(a[1].encode()) == 1
    assert sorted(stored.values()).count(b[1].encode()) == 1
    uid_a = next(uid for uid, mid in stored.items() if mid == a[1].encode())
    assert [o.uid for o, m in zip(outcomes, [a, a, b, a], strict=True) if m is a] == [uid_a] * 3
    assert sum(not o.already_there for o in outcomes) == 2  # a and b stored once each
    assert appends == [1, 2]  # the leader, then one MULTIAPPEND of a and b


@pytest.mark.parametrize(
    ("uid_set", "want"),
    [
        (b"9:7", [7, 8, 9]),
        (b"7,5,6", [5, 6, 7]),
        (b"5:6,9", [5, 6, 9]),
        (b"5,,6", [None] * 3),
        (b"1:4000000000", [None] * 3),
        (b"5:6", [None] * 3),
    ],
)
def test_appenduid_sets_are_read_defensively(uid_set: bytes, want: list[int | None]) -> None:
    from mailbridge.imap._copies import appended_uids

    response = ("OK", [b"[APPENDUID 38505 " + uid_set + b"] APPEND completed"])
    assert appended_uids(response, 3) == want


def test_only_an_exact_message_id_counts_as_already_archived() -> None:
    run = uuid.uuid4().hex
    upper = f"<{run}.1@ACME.example>"
    folded = f"<{run}.2@acme.example>"
    with FakeImapServer(users={USER: "pw"}) as server:
        with IMAPClient(
            server.host, server.port, ssl=True, ssl_context=server.client_ssl_context()
        ) as c:
            c.login(USER, "pw")
            c.append("Sent", f"Message-ID: {upper}\r\n\r\nx\r\n".encode())
            c.append("Sent", f"Message-ID:\r\n\t{folded}\r\n\r\nx\r\n".encode())
        archiver = SentArchiver(server.imap_settings())
        lower = archiver.archive(*_message(1, run)[:1], message_id=upper.lower())
        again = archiver.archive(*_message(2, run)[:1], message_id=folded)
        archiver.close()
        assert len(server.messages("Sent", user=USER)) == 3
    assert lower.archived and not lower.already_there  # another message's ID, by case
    assert again.already_there and again.uid == 2  # a folded header is still found


def test_a_connection_lost_during_multiappend_is_reported_then_retried_once() -> None:
    run = uuid.uuid4().hex
    messages = [_message(n, run) for n in range(4)]
    with FakeImapServer(users={USER: "pw"}) as server:
        archiver = SentArchiver(server.imap_settings())
        archiver.archive(*_message(0, "warm")[:1], message_id="<warm@x>")
        server.drop_on = "APPEND"
        outcomes = _queued_behind_a_slow_leader(archiver, server, messages)
        assert all(not o.archived for o in outcomes)
        assert all("archive it again" in (o.reason or "") for o in outcomes)
        server.drop_on = None
        retried = _archive_all(archiver, messages)
        archiver.close()
        stored = _stored_ids(server)
    assert all(o.archived for o in retried)
    for _, message_id in messages:  # exactly one copy each after the retry
        assert list(stored.values()).count(message_id.encode()) == 1


def test_close_settles_waiting_archives_without_hanging() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        archiver = SentArchiver(server.imap_settings())
        server.stall_seconds = 0.2
        pool = concurrent.futures.ThreadPoolExecutor(4)
        futures = [
            pool.submit(archiver.archive, *_message(n, "c")[:1], message_id=f"<c{n}@x>")
            for n in range(4)
        ]
        time.sleep(0.1)
        archiver.close()
        outcomes = [f.result(timeout=30) for f in futures]
        pool.shutdown()
    closed = [o for o in outcomes if not o.archived]
    assert closed and all(o.reason == "the archiver was closed" for o in closed)


@pytest.mark.parametrize("multiappend", [True, False], ids=["multiappend", "append"])
def test_one_refused_message_does_not_fail_its_batch(multiappend: bool) -> None:
    run = uuid.uuid4().hex
    with FakeImapServer(users={USER: "pw"}, max_literal=4096) as server:
        # Without LITERAL+ the server can refuse an oversized literal with NO.
        server.omit_capabilities = {"LITERAL+"} | (set() if multiappend else {"MULTIAPPEND"})
        archiver = SentArchiver(server.imap_settings())
        messages = [_message(n, run) for n in range(6)]
        big = messages[3][0].replace(b"Invoice 3\r\n", b"x" * 5000 + b"\r\n")
        messages[3] = (big, messages[3][1])
        outcomes = _queued_behind_a_slow_leader(archiver, server, messages)
        archiver.close()
        assert len(server.messages("Sent", user=USER)) == 6  # the leader's and five
    assert not outcomes[3].archived and "refused" in (outcomes[3].reason or "")
    assert all(o.archived for n, o in enumerate(outcomes) if n != 3)


def test_closing_settles_waiting_requests() -> None:
    with FakeImapServer(users={USER: "pw"}) as server:
        archiver = SentArchiver(server.imap_settings())
        archiver.close()
        outcome = archiver.archive(*_message(0, "x")[:1], message_id="<0.x@acme.example>")
    assert not outcome.archived and outcome.reason == "the archiver was closed"


@pytest.mark.realserver
def test_dovecot_stores_a_concurrent_batch_once_each(
    mta: RealMailServers, appends: list[int]
) -> None:
    settings = alice_imap(mta)
    run = uuid.uuid4().hex
    messages = [_message(n, run) for n in range(30)]
    archiver = SentArchiver(settings)
    try:
        first = archiver.archive(*messages[0][:1], message_id=messages[0][1])
        outcomes = _archive_all(archiver, messages, threads=10)
    finally:
        archiver.close()
    assert outcomes[0].already_there and outcomes[0].uid == first.uid
    assert all(o.archived for o in outcomes)
    assert max(appends) > 1  # Dovecot offers MULTIAPPEND (and LITERAL+)
    with IMAPClient(mta.host, mta.imaps_port, ssl=True, ssl_context=mta.client_ssl_context()) as c:
        c.login(ALICE, ALICE_PASSWORD)
        c.select_folder("Sent", readonly=True)
        for (_, message_id), outcome in zip(messages, outcomes, strict=True):
            assert c.search(["HEADER", "Message-ID", message_id]) == [outcome.uid]
