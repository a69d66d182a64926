"""A hostile IMAP server: injected STARTTLS answers, huge literals, trickles, floods, garbage."""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import imapclient
import pytest

from mailbridge import ImapSettings
from mailbridge.diagnosis import Category
from mailbridge.errors import (
    ConfigurationError,
    DeliveryTimeout,
    ImapCommandFailed,
    ImapConnectionLost,
    ImapLimitExceeded,
    ImapTimeout,
    MailbridgeError,
    TlsError,
)
from mailbridge.imap import InboxImporter, find_sent_folder, list_folders, open_imap, probe_imap
from mailbridge.imap._client import check_imapclient
from mailbridge.imap._connection import ImapLimits, close_imap
from mailbridge.imap._failures import server_text
from mailbridge.testing._imap_hostile import HostileImapServer, Peer

INJECTED = (
    b'* LIST (\\HasNoChildren \\Sent) "/" "Trash"\r\n'
    b"* CAPABILITY IMAP4rev1 AUTH=PLAIN X-INJECTED\r\n"
    b"* SEARCH 1 2 3\r\n"
)
MIB = 1024 * 1024


def _starttls(before: bytes = b"", after: bytes = b"") -> HostileImapServer:
    def answer(peer: Peer, tag: bytes) -> None:
        peer.starttls(tag=tag, before_ok=before, after_ok=after)

    return HostileImapServer({"STARTTLS": answer}, starttls=True)


def test_responses_injected_before_the_starttls_ok_are_discarded() -> None:
    with _starttls(before=INJECTED) as server:
        client = open_imap(server.settings())
        try:
            folders = list_folders(client)
            assert [f.name for f in folders] == ["Sent"]  # no phantom Trash
            assert find_sent_folder(client, folders) == "Sent"
            assert not client.has_capability("X-INJECTED")
            client.select_folder("INBOX")
            assert client.search(["ALL"]) == [1]  # not the injected 1 2 3
        finally:
            close_imap(client)


@pytest.mark.parametrize("injected", INJECTED.splitlines(keepends=True))
def test_anything_after_the_starttls_ok_in_the_same_read_fails(injected: bytes) -> None:
    with _starttls(after=injected) as server:
        with pytest.raises(TlsError, match="injection"):
            open_imap(server.settings())
    assert not any(line.split(b" ")[1:2] == [b"LOGIN"] for line in server.received)


def _fetch_answer(head: bytes, body: bytes, *, times: int, pause: float = 0.0) -> HostileImapServer:
    def answer(peer: Peer, tag: bytes) -> None:
        if peer.send(head):
            peer.stream(body, times=times, pause=pause)

    return HostileImapServer({"UID FETCH": answer})


def _fetch(server: HostileImapServer, limits: ImapLimits) -> None:
    client = open_imap(server.settings(), limits=limits)
    try:
        client.select_folder("INBOX")
        client.fetch([1], ["BODY.PEEK[2]"])
    finally:
        close_imap(client)


def test_a_literal_over_the_cap_is_refused_when_announced() -> None:
    # A 40-byte part served as a 10 MB literal, with a cap of 64 KB.
    head = b"* 1 FETCH (UID 1 BODY[2] {%d}\r\n" % (10 * MIB)
    with _fetch_answer(head, b"x" * 65536, times=160) as server:
        started = time.monotonic()
        with pytest.raises(ImapLimitExceeded, match="literal of 10485760 bytes"):
            _fetch(server, ImapLimits(max_literal_bytes=64 * 1024))
    assert time.monotonic() - started < 3


def test_many_literals_under_the_cap_hit_the_command_cap() -> None:
    literal = b"{60000}\r\n" + b"x" * 60000
    head = b"* 1 FETCH (UID 1 BODY[2] " + literal
    with _fetch_answer(head, b" BODY[3] " + literal, times=200) as server:
        with pytest.raises(ImapLimitExceeded, match="more than 1048576 bytes"):
            _fetch(server, ImapLimits(max_literal_bytes=64 * 1024, max_command_bytes=MIB))


def test_a_trickled_literal_hits_the_command_deadline() -> None:
    # One byte every 50 ms never trips the per-read time-out (5 s); the whole command does.
    head = b"* 1 FETCH (UID 1 BODY[2] {100}\r\n"
    with _fetch_answer(head, b"x", times=200, pause=0.05) as server:
        started = time.monotonic()
        with pytest.raises(ImapTimeout) as caught:
            _fetch(server, ImapLimits(command_seconds=1.0))
    assert isinstance(caught.value, TimeoutError)
    assert 0.9 < time.monotonic() - started < 3


def test_endless_untagged_responses_hit_the_line_cap() -> None:
    with _fetch_answer(b"", b"* OK still here\r\n" * 1000, times=1000) as server:
        started = time.monotonic()
        with pytest.raises(ImapLimitExceeded, match="more than 5000 lines"):
            _fetch(server, ImapLimits(max_lines=5000))
    assert time.monotonic() - started < 3


def _list_answer(lines: bytes) -> HostileImapServer:
    def answer(peer: Peer, tag: bytes) -> None:
        peer.send(lines + tag + b" OK done\r\n")

    return HostileImapServer({"LIST": answer})


@pytest.mark.parametrize(
    "answer",
    [
        b"* LIST " + b"(" * 5000 + b")" * 5000 + b' "/" "x"\r\n',  # RecursionError in the parser
        b'* LIST (\\Sent "/" "x"\r\n',  # unbalanced
        b'* LIST (\\Sent) "/" {5}\r\nab\r\n',  # a literal that swallows the tagged answer
    ],
    ids=["nesting", "unbalanced", "short-literal"],
)
def test_unreadable_answers_are_typed_errors(answer: bytes) -> None:
    with _list_answer(answer) as server:
        client = open_imap(server.settings(command_timeout=1.0))
        try:
            with pytest.raises(MailbridgeError) as caught:
                list_folders(client)
        finally:
            close_imap(client)
    assert isinstance(caught.value, (ImapCommandFailed, ImapTimeout))


def test_invalid_modified_utf7_names_are_left_out() -> None:
    lines = (
        b'* LIST () "/" "&A-"\r\n* LIST (\\Sent) "/" "Gesendet"\r\n'
        b'* LIST () "/" "&2D0-"\r\n* LIST () "/" "&AOQ-rger"\r\n'
    )
    with _list_answer(lines) as server:
        client = open_imap(server.settings())
        try:
            assert [f.name for f in list_folders(client)] == ["Gesendet", "ärger"]
        finally:
            close_imap(client)


def test_test_connection_reports_an_unreadable_folder_list() -> None:
    with _list_answer(b"* LIST " + b"(" * 5000 + b"\r\n") as server:
        report = probe_imap(server.settings(), try_alternative=False)
    assert not report.ok
    assert report.steps[-1].name == "folder" and not report.steps[-1].ok


def test_a_connection_closed_mid_answer_is_typed() -> None:
    def hang_up(peer: Peer, tag: bytes) -> None:
        peer.send(b"* 1 FETCH (UID 1 BODY[2] {50}\r\nonly part")
        peer.sock.close()

    with HostileImapServer({"UID FETCH": hang_up}) as server:
        with pytest.raises(ImapConnectionLost):
            _fetch(server, ImapLimits())


def test_server_texts_are_decoded_for_messages() -> None:
    def refuse(peer: Peer, tag: bytes) -> None:
        peer.send(tag + b" BAD [CLIENTBUG] Gr\xc3\xbc\xc3\x9fe \x1b[31m nicht\r\n")

    with HostileImapServer({"SELECT": refuse}) as server:
        client = open_imap(server.settings())
        try:
            with pytest.raises(ImapCommandFailed) as caught:
                client.select_folder("INBOX")
        finally:
            close_imap(client)
    text = str(caught.value)
    assert "[CLIENTBUG] Grüße" in text
    assert "b'" not in text and "\\x" not in text and "\x1b" not in text


def test_typed_errors_are_still_what_imapclient_users_catch() -> None:
    assert issubclass(ImapCommandFailed, imapclient.exceptions.IMAPClientError)
    assert issubclass(ImapConnectionLost, imapclient.exceptions.IMAPClientAbortError)
    assert issubclass(ImapTimeout, TimeoutError)


def test_limits_for_parts_cover_base64_of_the_part() -> None:
    limits = ImapLimits.for_parts(40)
    assert limits.max_literal_bytes >= 4 * 40 // 3 + 2
    assert ImapLimits.for_parts(25 * MIB).max_literal_bytes < 64 * MIB


def test_the_imapclient_internals_we_build_on_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    check_imapclient()  # the installed version has them
    monkeypatch.delattr(imapclient.IMAPClient, "_create_IMAP4")
    with pytest.raises(ImportError, match=r"pinned in mailbridge's pyproject\.toml"):
        check_imapclient()


def test_the_installed_imapclient_is_in_the_pinned_range() -> None:
    text = Path(__file__).parents[1].joinpath("pyproject.toml").read_text()
    low, high = re.search(r'"imapclient>=([\d.]+),<([\d.]+)"', text).groups()  # type: ignore[union-attr]
    version = tuple(int(n) for n in imapclient.__version__.split(".")[:2])
    assert tuple(map(int, low.split("."))) <= version < tuple(map(int, high.split(".")))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "login failed: b'[AUTHENTICATIONFAILED] Authentication failed.'",
            "login failed: [AUTHENTICATIONFAILED] Authentication failed.",
        ),
        (
            "SELECT command error: BAD [b'Gr\\xc3\\xbc\\xc3\\x9fe']",
            "SELECT command error: BAD [Grüße]",
        ),
        (b"[ALERT] \x1b[2Jwipe\r\nnext", "[ALERT] [2Jwipe next"),
        ("x" * 1000, "x" * 299 + "…"),
    ],
)
def test_server_text_is_decoded_clean_and_bounded(raw: object, expected: str) -> None:
    assert server_text(raw) == expected


@pytest.mark.parametrize(
    "structure",
    [
        b"(" * 5000 + b")" * 5000,  # RecursionError in imapclient's parser
        b'("application" "pdf" NIL NIL NIL "base64" "forty")',  # a size that is no number
        b'(("application" "pdf") "mixed"',  # unbalanced
    ],
    ids=["nesting", "bad-size", "unbalanced"],
)
def test_the_importer_reports_hostile_structures_per_message(structure: bytes) -> None:
    def fetch(peer: Peer, tag: bytes) -> None:
        peer.send(b"* 1 FETCH (UID 1 BODYSTRUCTURE " + structure + b")\r\n" + tag + b" OK done\r\n")

    with HostileImapServer({"UID FETCH": fetch}) as server:
        batch = InboxImporter(server.settings(command_timeout=2.0)).fetch()
    # The run goes on: the message is reported, and scanned so that commit() marks it.
    assert batch.documents == ()
    assert [uid for uid, _ in batch.problems] == [1]
    assert batch.uids == (1,)


def test_a_select_without_uidvalidity_is_a_typed_imap_error() -> None:
    def select(peer: Peer, tag: bytes) -> None:
        peer.send(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 0] bad\r\n" + tag + b" OK done\r\n")

    with HostileImapServer({"SELECT": select, "EXAMINE": select}) as server:
        with pytest.raises(ImapCommandFailed, match="UIDVALIDITY") as caught:
            InboxImporter(server.settings()).fetch()
    assert isinstance(caught.value, imapclient.exceptions.IMAPClientError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -1])
@pytest.mark.parametrize(
    "field", ["command_seconds", "max_literal_bytes", "max_command_bytes", "max_lines"]
)
def test_limits_refuse_values_that_are_not_positive_and_finite(field: str, value: float) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ImapLimits(**{field: value})
    assert caught.value.field == field


def test_capabilities_are_asked_again_after_starttls() -> None:
    with HostileImapServer(starttls=True) as server:  # STARTTLS offered only before TLS
        client = open_imap(server.settings())
        try:
            assert not client.has_capability("STARTTLS")
            assert client.has_capability("SPECIAL-USE")
        finally:
            close_imap(client)


def test_a_server_that_never_greets_is_a_timeout_error() -> None:
    """A listener that accepts and stays silent: a typed time-out, also a TimeoutError."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        settings = ImapSettings(
            "127.0.0.1", port, "starttls", connect_timeout=0.5, command_timeout=0.5
        )
        with pytest.raises(DeliveryTimeout) as caught:
            open_imap(settings)
    assert isinstance(caught.value, TimeoutError)
    assert "did not greet" in str(caught.value)


@pytest.mark.parametrize(
    ("greeting", "expected"),
    [
        (b"", "closed the connection before its greeting"),
        (b"* OK half a gree", "closed the connection before its greeting"),
        (b"* BYE too many connections from your address\r\n", "refused the connection"),
    ],
)
def test_a_server_that_closes_or_says_bye_instead_of_greeting_is_a_lost_connection(
    greeting: bytes, expected: str
) -> None:
    """Not "answered unexpectedly" (a protocol error): the server went away or is busy."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5.0)
        settings = ImapSettings("127.0.0.1", listener.getsockname()[1], "none", command_timeout=5)

        def greet_and_close() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(greeting)

        thread = threading.Thread(target=greet_and_close)
        thread.start()
        try:
            with pytest.raises(ImapConnectionLost, match=expected) as caught:
                open_imap(settings)
        finally:
            thread.join(5.0)
    assert caught.value.temporary and caught.value.diagnosis is not None
    if greeting.startswith(b"* BYE"):
        assert "too many connections" in str(caught.value)
        assert caught.value.diagnosis.category == Category.SERVER_UNAVAILABLE


def test_a_fetch_timeout_bounds_all_its_commands_together() -> None:
    def slowly(answer: bytes) -> Callable[[Peer, bytes], None]:
        def script(peer: Peer, tag: bytes) -> None:  # 0.6 s: within command_seconds
            if peer.stream(b"* OK still working\r\n", times=6, pause=0.1) == 6:
                peer.send(answer + tag + b" OK done\r\n")

        return script

    scripts = {
        "UID SEARCH": slowly(b"* SEARCH 1\r\n"),
        "UID FETCH": slowly(b"* 1 FETCH (UID 1 BODYSTRUCTURE NIL)\r\n"),
    }
    with HostileImapServer(scripts) as server:
        importer = InboxImporter(server.settings(), limits=ImapLimits(command_seconds=5.0))
        started = time.monotonic()
        with pytest.raises(ImapTimeout, match="operation"):
            importer.fetch(timeout=0.8)  # SEARCH and FETCH together take 1.2 s
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0.0, -1.0])
def test_a_fetch_timeout_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        InboxImporter(ImapSettings("127.0.0.1", 1, security="none")).fetch(timeout=timeout)
