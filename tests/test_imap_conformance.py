"""The same IMAP scenarios against FakeImapServer and against the real Dovecot.

Each scenario only looks at what a client observes, so that the fake stays true to a real
server where the archiver depends on it. Every scenario works in folders of its own (and
deletes them), because the Dovecot instance is shared by the module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from imapclient import IMAPClient, imap_utf7
from imapclient.exceptions import IMAPClientError, LoginError

from mailbridge.testing._imap import FakeImapServer
from mailbridge.testing.realservers import RealMailServers, availability

from .conftest import outside_basetemp, require

USER = "archiver@example.test"
PASSWORD = "Archiv-Secret-7"
INTERNAL_DATE = dt.datetime(2026, 3, 14, 9, 26, 53, tzinfo=dt.timezone(dt.timedelta(hours=1)))
RECENT = b"\\Recent"  # Dovecot reports it, the fake does not: never compared


class RawImap:
    """A minimal IMAP client on a socket, for checking exact wire responses."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext | None, timeout: float = 10.0
    ) -> None:
        self.host, self.timeout = host, timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock: socket.socket = (
            context.wrap_socket(sock, server_hostname=host) if context else sock
        )
        self.buffer = b""
        self.counter = 0
        self.greeting = self.readline()

    def readline(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(self.buffer)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; buffered {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_exact(self, size: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self.buffer) < size:
            if time.monotonic() > deadline:
                raise TimeoutError(self.buffer)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response_line(self) -> bytes:
        """One response, literals included inline."""
        line = self.readline()
        for _ in range(100):
            match = re.search(rb"\{(\d+)\}$", line)
            if match is None:
                return line
            line += b"\r\n" + self.read_exact(int(match.group(1))) + self.readline()
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, text: bytes) -> tuple[list[bytes], bytes]:
        """Send a command (no synchronizing literals); (untagged lines, tagged line)."""
        self.counter += 1
        tag = b"r%d" % self.counter
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> tuple[list[bytes], bytes]:
        untagged = []
        for _ in range(10_000):
            line = self.response_line()
            if line.startswith(tag + b" "):
                return untagged, line[len(tag) + 1 :]
            untagged.append(line)
        raise AssertionError("no tagged response")

    def login(self, user: str, password: str) -> None:
        _, result = self.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        assert result.startswith(b"OK"), result

    def close(self) -> None:
        self.sock.close()


@dataclass
class Target:
    """A server under test, as a client reaches it (implicit TLS)."""

    name: str
    host: str
    port: int
    context: ssl.SSLContext
    cleanup: list[str] = field(default_factory=list)

    def client(self, *, login: bool = True) -> IMAPClient:
        client = IMAPClient(self.host, self.port, ssl=True, ssl_context=self.context, timeout=10)
        client.normalise_times = False
        if login:
            client.login(USER, PASSWORD)
        return client

    def raw(self) -> RawImap:
        raw = RawImap(self.host, self.port, self.context)
        raw.login(USER, PASSWORD)
        return raw

    def folder(self, client: IMAPClient, label: str = "F") -> str:
        """A new folder of this scenario's own, deleted afterwards."""
        name = f"{label}-{uuid.uuid4().hex[:10]}"
        client.create_folder(name)
        self.cleanup.append(name)
        return name


@pytest.fixture(
    scope="module", params=["fake", pytest.param("dovecot", marks=pytest.mark.realserver)]
)
def server(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, str, int, ssl.SSLContext]]:
    if request.param == "fake":
        with FakeImapServer(users={USER: PASSWORD}) as fake:
            yield ("fake", fake.host, fake.port, fake.client_ssl_context())
        return
    require(availability(), "real-server")
    with outside_basetemp("mailbridge-imap-conformance-") as directory:
        with RealMailServers(directory, users={USER: PASSWORD}) as servers:
            yield ("dovecot", servers.host, servers.imaps_port, servers.client_ssl_context())


@pytest.fixture
def target(server: tuple[str, str, int, ssl.SSLContext]) -> Iterator[Target]:
    target = Target(*server)
    yield target
    if target.cleanup:
        client = target.client()
        try:
            for name in sorted(target.cleanup, key=len, reverse=True):
                with contextlib.suppress(IMAPClientError):  # best effort
                    client.delete_folder(name)
        finally:
            client.logout()


def make_message(subject: str = "Invoice 2026-001", message_id: str | None = None) -> bytes:
    message_id = message_id or f"<{uuid.uuid4().hex}@mailbridge.test>"
    return (
        b"From: Billing <billing@example.test>\r\n"
        b"To: Customer <customer@example.test>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Sat, 14 Mar 2026 09:26:53 +0100\r\n"
        b"Message-ID: " + message_id.encode() + b"\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe, anbei die Rechnung.\r\n"
        b"--b1\r\n"
        b"Content-Type: application/pdf; name=invoice.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=invoice.pdf\r\n"
        b"\r\n"
        b"JVBERi0xLjQKJSVFT0YK\r\n"
        b"--b1--\r\n"
    )


def appenduid(response: bytes) -> tuple[int, list[int]]:
    match = re.search(rb"\[APPENDUID (\d+) ([\d:,]+)\]", response)
    assert match is not None, response
    uids: list[int] = []
    for item in match.group(2).split(b","):
        low, _, high = item.partition(b":")
        uids.extend(range(int(low), int(high or low) + 1))
    return int(match.group(1)), uids


def flags(values: tuple[bytes, ...]) -> set[bytes]:
    return set(values) - {RECENT}


# -- the scenarios ------------------------------------------------------------------------


def test_capabilities_needed_by_the_archiver(target: Target) -> None:
    client = target.client()
    try:
        caps = set(client.capabilities())
        assert {b"IMAP4REV1", b"SPECIAL-USE", b"UIDPLUS", b"MOVE", b"IDLE", b"LITERAL+"} <= caps
        assert client.namespace().personal == (("", "/"),)
    finally:
        client.logout()


def test_list_special_use_finds_sent(target: Target) -> None:
    client = target.client()
    raw = target.raw()
    try:
        folders = {name: set(attrs) for attrs, _, name in client.list_folders()}
        assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= set(folders)
        assert b"\\Sent" in folders["Sent"]
        assert client.find_special_folder(b"\\Sent") == "Sent"
        untagged, result = raw.command(b'LIST (SPECIAL-USE) "" "*"')
        assert result.startswith(b"OK")
        listed = {line.rsplit(b" ", 1)[1].strip(b'"'): line for line in untagged}
        assert b"\\Sent" in listed[b"Sent"]
        assert b"INBOX" not in listed
        untagged, result = raw.command(b'LIST "" "*" RETURN (SPECIAL-USE)')
        assert result.startswith(b"OK")
        assert any(b"\\Sent" in line and line.rstrip(b'"').endswith(b"Sent") for line in untagged)
    finally:
        raw.close()
        client.logout()


def test_list_wildcards_and_nested_create(target: Target) -> None:
    client = target.client()
    try:
        parent = target.folder(client, "Kunden")
        child = f"{parent}/Rechnungen"
        client.create_folder(child)
        target.cleanup.append(child)
        everything = [name for _, _, name in client.list_folders()]
        assert parent in everything
        assert child in everything
        top = [name for _, _, name in client.list_folders(pattern="%")]
        assert parent in top
        assert child not in top
        below = [name for _, _, name in client.list_folders(directory=parent + "/", pattern="%")]
        assert below == [child]
        assert client.select_folder(child)[b"EXISTS"] == 0
    finally:
        client.logout()


def test_select_and_examine_report_the_folder_state(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        client.append(folder, make_message())
        client.append(folder, make_message())
        state = client.select_folder(folder)
        assert state[b"EXISTS"] == 2
        assert state[b"UIDNEXT"] == 3
        assert isinstance(state[b"UIDVALIDITY"], int)
        assert state[b"UIDVALIDITY"] > 0
        assert state[b"READ-WRITE"] is True
        assert b"\\Seen" in state[b"PERMANENTFLAGS"]
        examined = client.select_folder(folder, readonly=True)
        assert examined[b"READ-ONLY"] == [b""]
        assert examined[b"UIDVALIDITY"] == state[b"UIDVALIDITY"]
    finally:
        client.logout()


def test_append_roundtrip_is_byte_identical(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client, "Gesendet")
        message = make_message()
        response = client.append(folder, message, flags=[b"\\Seen"], msg_time=INTERNAL_DATE)
        validity, [uid] = appenduid(response)
        assert client.select_folder(folder)[b"UIDVALIDITY"] == validity
        items = ["BODY.PEEK[]", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]
        fetched = client.fetch([uid], items)[uid]
        assert fetched[b"BODY[]"] == message
        assert flags(fetched[b"FLAGS"]) == {b"\\Seen"}
        assert fetched[b"INTERNALDATE"] == INTERNAL_DATE
        assert fetched[b"RFC822.SIZE"] == len(message)
        parts = client.fetch([uid], ["BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]"])[uid]
        assert parts[b"BODY[HEADER]"] + parts[b"BODY[TEXT]"] == message
    finally:
        client.logout()


def test_multiappend_returns_a_uid_range(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        messages = [make_message("one"), {"msg": make_message("two"), "flags": [b"\\Flagged"]}]
        _, data = client.multiappend(folder, messages)
        _, uids = appenduid(data[0])
        assert len(uids) == 2
        client.select_folder(folder)
        fetched = client.fetch(uids, ["FLAGS"])
        assert flags(fetched[uids[1]][b"FLAGS"]) == {b"\\Flagged"}
    finally:
        client.logout()


def test_fetch_body_sets_seen_but_peek_does_not(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        message = make_message()
        _, [uid] = appenduid(client.append(folder, message))
        client.select_folder(folder)
        assert flags(client.fetch([uid], ["BODY.PEEK[]"])[uid].get(b"FLAGS", ())) == set()
        assert flags(client.get_flags([uid])[uid]) == set()
        assert client.fetch([uid], ["BODY[]"])[uid][b"BODY[]"] == message
        assert flags(client.get_flags([uid])[uid]) == {b"\\Seen"}
        header = client.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (Subject)]"])[uid]
        assert list(header.values())[-1] == b"Subject: Invoice 2026-001\r\n\r\n"
    finally:
        client.logout()


def test_uid_search_header_message_id(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        wanted = f"<{uuid.uuid4().hex}@mailbridge.test>"
        client.append(folder, make_message())
        _, [uid] = appenduid(client.append(folder, make_message(message_id=wanted)))
        client.append(folder, make_message())
        client.select_folder(folder)
        assert client.search(["HEADER", "Message-ID", wanted]) == [uid]
        assert client.search(["HEADER", "Message-ID", "<nothing@here>"]) == []
        assert len(client.search("ALL")) == 3
    finally:
        client.logout()


def test_store_keyword_and_search_keyword(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        uids = [appenduid(client.append(folder, make_message()))[1][0] for _ in range(3)]
        client.select_folder(folder)
        client.add_flags([uids[1]], [b"$Archived"])
        assert flags(client.get_flags([uids[1]])[uids[1]]) == {b"$Archived"}
        assert client.search(["KEYWORD", "$Archived"]) == [uids[1]]
        assert client.search(["UNKEYWORD", "$Archived"]) == [uids[0], uids[2]]
        client.add_flags([uids[0]], [b"\\Seen"])
        assert client.search(["UNSEEN"]) == [uids[1], uids[2]]
        assert client.search(["NOT", "SEEN", "NOT", "KEYWORD", "$Archived"]) == [uids[2]]
        client.remove_flags([uids[1]], [b"$Archived"])
        assert client.search(["KEYWORD", "$Archived"]) == []
    finally:
        client.logout()


def test_uid_copy_answers_copyuid(target: Target) -> None:
    client = target.client()
    raw = target.raw()
    try:
        source, dest = target.folder(client, "Src"), target.folder(client, "Dst")
        message = make_message()
        _, [uid] = appenduid(client.append(source, message))
        _, result = raw.command(b'SELECT "' + source.encode() + b'"')
        assert result.startswith(b"OK [READ-WRITE]")
        _, result = raw.command(b'UID COPY %d "%s"' % (uid, dest.encode()))
        match = re.match(rb"OK \[COPYUID (\d+) (\d+) (\d+)\]", result)
        assert match is not None, result
        assert int(match.group(2)) == uid
        validity = client.select_folder(dest)[b"UIDVALIDITY"]
        assert int(match.group(1)) == validity
        copied = int(match.group(3))
        assert client.fetch([copied], ["BODY.PEEK[]"])[copied][b"BODY[]"] == message
        client.select_folder(source)
        assert client.search("ALL") == [uid]
    finally:
        raw.close()
        client.logout()


def test_uid_move_between_folders(target: Target) -> None:
    client = target.client()
    raw = target.raw()
    try:
        source, dest = target.folder(client, "Src"), target.folder(client, "Dst")
        message = make_message()
        first = appenduid(client.append(source, message))[1][0]
        second = appenduid(client.append(source, make_message()))[1][0]
        raw.command(b'SELECT "' + source.encode() + b'"')
        untagged, result = raw.command(b'UID MOVE %d "%s"' % (first, dest.encode()))
        assert result.startswith(b"OK"), result
        assert any(re.match(rb"\* OK \[COPYUID \d+ %d \d+\]" % first, u) for u in untagged)
        assert b"* 1 EXPUNGE" in untagged
        client.select_folder(dest)
        [moved] = client.search("ALL")
        assert client.fetch([moved], ["BODY.PEEK[]"])[moved][b"BODY[]"] == message
        client.select_folder(source)
        client.move([second], dest)
        assert client.search("ALL") == []
        assert client.folder_status(dest, [b"MESSAGES"])[b"MESSAGES"] == 2
    finally:
        raw.close()
        client.logout()


def test_expunge_removes_deleted_messages(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        uids = [appenduid(client.append(folder, make_message()))[1][0] for _ in range(3)]
        client.select_folder(folder)
        client.add_flags([uids[0], uids[2]], [b"\\Deleted"])
        client.uid_expunge([uids[2]])
        assert client.search("ALL") == [uids[0], uids[1]]
        _, responses = client.expunge()
        assert (1, b"EXPUNGE") in responses
        assert client.search("ALL") == [uids[1]]
        assert client.select_folder(folder)[b"EXISTS"] == 1
    finally:
        client.logout()


def test_wrong_password_is_refused(target: Target) -> None:
    client = target.client(login=False)
    try:
        with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
            client.login(USER, "not-the-password")
        client.login(USER, PASSWORD)
    finally:
        client.logout()


def test_non_ascii_folder_name_roundtrip(target: Target) -> None:
    client = target.client()
    raw = target.raw()
    try:
        name = target.folder(client, "Entwürfe Größe")
        assert name in [folder for _, _, folder in client.list_folders()]
        encoded = imap_utf7.encode(name)
        assert b"&APw-" in encoded
        untagged, _ = raw.command(b'LIST "" "' + encoded + b'"')
        assert len(untagged) == 1
        assert untagged[0].rstrip(b'"').endswith(encoded)
        message = make_message()
        _, [uid] = appenduid(client.append(name, message))
        client.select_folder(name)
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == message
    finally:
        raw.close()
        client.logout()


def test_idle_reports_a_new_message(target: Target) -> None:
    watcher, writer = target.client(), target.client()
    try:
        folder = target.folder(writer)
        watcher.select_folder(folder)
        watcher.idle()
        writer.append(folder, make_message())
        responses = watcher.idle_check(timeout=5)
        watcher.idle_done()
        assert (1, b"EXISTS") in responses
    finally:
        writer.logout()
        watcher.logout()


def test_literals_synchronizing_and_non_synchronizing(target: Target) -> None:
    client = target.client()
    raw = target.raw()
    try:
        folder = target.folder(client)
        message = make_message()
        raw.send(b'a1 APPEND "%s" (\\Seen) {%d+}\r\n' % (folder.encode(), len(message)))
        raw.send(message + b"\r\n")
        _, result = raw.until(b"a1")
        assert result.startswith(b"OK [APPENDUID"), result
        raw.send(b'a2 APPEND "%s" {%d}\r\n' % (folder.encode(), len(message)))
        assert raw.readline().startswith(b"+")
        raw.send(message + b"\r\n")
        _, result = raw.until(b"a2")
        assert result.startswith(b"OK [APPENDUID"), result
        client.select_folder(folder)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
        assert [item[b"BODY[]"] for item in fetched.values()] == [message, message]
    finally:
        raw.close()
        client.logout()


def test_errors_bad_for_syntax_no_for_semantics(target: Target) -> None:
    raw = target.raw()
    try:
        assert raw.command(b"FROBNICATE")[1].startswith(b"BAD")
        assert raw.command(b'SELECT "unbalanced')[1].startswith(b"BAD")
        assert raw.command(b'SELECT "No-Such-Folder-x1"')[1].startswith(b"NO")
        assert raw.command(b"FETCH 1 (FLAGS)")[1].startswith(b"BAD")  # nothing selected
        assert raw.command(b"NOOP")[1].startswith(b"OK")
    finally:
        raw.close()


def test_status_counts(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        client.append(folder, make_message(), flags=[b"\\Seen"])
        client.append(folder, make_message())
        status = client.folder_status(folder, [b"MESSAGES", b"UNSEEN", b"UIDNEXT"])
        assert status[b"MESSAGES"] == 2
        assert status[b"UNSEEN"] == 1
        assert status[b"UIDNEXT"] == 3
    finally:
        client.logout()


def test_error_response_codes(target: Target) -> None:
    client = target.client()
    raw = target.raw()
    try:
        missing = f"Missing-{uuid.uuid4().hex[:8]}".encode()
        assert raw.command(b'LIST "" ""')[0] == [b'* LIST (\\Noselect) "/" ""']
        _, result = raw.command(b"APPEND " + missing + b" {1+}\r\nx")
        assert result.startswith(b"NO [TRYCREATE]")
        assert raw.command(b"DELETE " + missing)[1].startswith(b"NO [NONEXISTENT]")
        assert raw.command(b"DELETE INBOX")[1].startswith(b"NO")
        folder = target.folder(client).encode()
        assert raw.command(b"SELECT " + folder)[1].startswith(b"OK")
        assert raw.command(b"FETCH 1:* (FLAGS)")[1].startswith(b"BAD")
        untagged, result = raw.command(b"UID FETCH 1:* (FLAGS)")
        assert (untagged, result[:2]) == ([], b"OK")
        raw.command(b"APPEND " + folder + b" {1+}\r\nx")
        assert raw.command(b"COPY 1 " + missing)[1].startswith(b"NO [TRYCREATE]")
        assert raw.command(b"FETCH 2 (FLAGS)")[1].startswith(b"BAD")
        assert raw.command(b"STORE 1 +FLAGS (\\Bogus)")[1].startswith(b"BAD")
    finally:
        raw.close()
        client.logout()


def test_envelope_and_bodystructure(target: Target) -> None:
    client = target.client()
    try:
        folder = target.folder(client)
        message = make_message("Rechnung")
        _, [uid] = appenduid(client.append(folder, message))
        client.select_folder(folder)
        data = client.fetch([uid], ["ENVELOPE", "BODYSTRUCTURE"])[uid]
        envelope = data[b"ENVELOPE"]
        assert envelope.subject == b"Rechnung"
        assert envelope.from_[0].name == b"Billing"
        assert (envelope.to[0].mailbox, envelope.to[0].host) == (b"customer", b"example.test")
        assert envelope.date == INTERNAL_DATE  # the same instant as the Date header
        structure = data[b"BODYSTRUCTURE"]
        assert structure.is_multipart
        text, pdf = structure[0]
        assert structure[1].lower() == b"mixed"
        assert [value.lower() for value in text[:2]] == [b"text", b"plain"]
        assert [value.lower() for value in text[2]] == [b"charset", b"utf-8"]
        assert text[5].lower() == b"8bit"
        assert [value.lower() for value in pdf[:2]] == [b"application", b"pdf"]
        assert pdf[5].lower() == b"base64"
        assert pdf[6] == len(b"JVBERi0xLjQKJSVFT0YK\r\n") - 2
    finally:
        client.logout()


def test_search_charset_utf8_with_8bit_strings(target: Target) -> None:
    # As Cyrus and Dovecot accept them: 8-bit UTF-8 in literals (what imapclient sends)
    # and, leniently, in quoted strings.
    client = target.client()
    raw = target.raw()
    try:
        folder = target.folder(client)
        _, [uid] = appenduid(client.append(folder, make_message("Rechnung für März")))
        client.append(folder, make_message("Rechnung"))
        client.select_folder(folder)
        assert client.search(["SUBJECT", "für März"], charset="UTF-8") == [uid]
        assert client.search(["BODY", "GRÜSSE"], charset="UTF-8") == []
        assert len(client.search(["BODY", "Grüße"], charset="UTF-8")) == 2
        raw.command(b"SELECT " + folder.encode())
        for program in (
            b'SUBJECT "f\xc3\xbcr M\xc3\xa4rz"',
            b"SUBJECT {8+}\r\nf\xc3\xbcr M\xc3\xa4",
            b'OR SUBJECT "\xc3\xa4rz" SUBJECT "nothing"',
        ):
            untagged, result = raw.command(b"UID SEARCH CHARSET UTF-8 " + program)
            assert result.startswith(b"OK"), (program, result)
            assert untagged == [b"* SEARCH %d" % uid], program
        for program in (  # no CHARSET means UTF-8; other charsets are converted
            b'UID SEARCH SUBJECT "f\xc3\xbcr"',
            b'UID SEARCH CHARSET ISO-8859-1 SUBJECT "f\xfcr M\xe4rz"',
        ):
            untagged, result = raw.command(program)
            assert (untagged, result[:2]) == ([b"* SEARCH %d" % uid], b"OK"), program
        _, result = raw.command(b'UID SEARCH CHARSET UTF-8 SUBJECT "\xff\xfe"')
        assert result.startswith(b"BAD"), result  # not UTF-8
        _, result = raw.command(b'UID SEARCH CHARSET X-UNKNOWN SUBJECT "x"')
        assert result.startswith(b"NO [BADCHARSET"), result
    finally:
        raw.close()
        client.logout()
