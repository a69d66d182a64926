"""FakeImapServer: every feature and fault, seen through imapclient and a raw socket."""

from __future__ import annotations

import base64
import datetime as dt
import imaplib
import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailbridge.settings import ImapSettings, Security
from mailbridge.testing._imap import FakeImapServer, ImapMessage
from mailbridge.testing._imap_syntax import ParseError, tokenize

from .test_imap_conformance import RawImap

USER = "tenant@example.test"
PASSWORD = "S3cret-Pa55word!"
MESSAGE = (
    b"From: Billing <billing@example.test>\r\n"
    b"To: customer@example.test\r\n"
    b"Subject: Invoice 7\r\n"
    b"Date: Mon, 02 Feb 2026 10:00:00 +0000\r\n"
    b"Message-ID: <inv-7@example.test>\r\n"
    b"\r\n"
    b"Please pay.\r\n"
)
MULTIPART = (
    b"From: a@example.test\r\n"
    b"Subject: parts\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--XX\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0K\r\n"
    b"--XX--\r\n"
)


@pytest.fixture
def server() -> Iterator[FakeImapServer]:
    with FakeImapServer(users={USER: PASSWORD}) as fake:
        yield fake
    assert fake.errors == []


def connect(server: FakeImapServer, *, login: bool = True) -> IMAPClient:
    client = IMAPClient(
        server.host, server.port, ssl=True, ssl_context=server.client_ssl_context(), timeout=5
    )
    client.normalise_times = False
    if login:
        client.login(USER, PASSWORD)
    return client


def raw(server: FakeImapServer, *, login: bool = True) -> RawImap:
    context = server.client_ssl_context() if server.tls == "implicit" else None
    connection = RawImap(server.host, server.port, context, timeout=5)
    if login:
        connection.login(USER, PASSWORD)
    return connection


# -- life cycle and settings -----------------------------------------------------------


def test_start_stop_is_fast_and_cleans_up() -> None:
    began = time.monotonic()
    server = FakeImapServer().start()
    ca_file = server.ca_file
    assert server.port > 0
    assert ca_file.is_file()
    client = connect(server, login=False)
    client.login("alice@example.test", "alice-secret")
    server.stop()
    assert time.monotonic() - began < 3
    assert not ca_file.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=1).close()


def test_imap_settings(server: FakeImapServer) -> None:
    settings = server.imap_settings()
    assert isinstance(settings, ImapSettings)
    assert (settings.host, settings.port) == (server.host, server.port)
    assert settings.security is Security.IMPLICIT_TLS
    assert settings.username == USER
    assert settings.password is not None
    assert settings.password.reveal() == PASSWORD
    assert settings.ca_file == server.ca_file
    assert settings.command_timeout == 5.0
    assert server.imap_settings(folder="Archive").folder == "Archive"
    context = server.client_ssl_context()
    assert server.imap_settings(ssl_context=context).ca_file is None
    with FakeImapServer(users={}, tokens={USER: "tok"}, tls="starttls") as oauth:
        settings = oauth.imap_settings()
        assert settings.security is Security.STARTTLS
        assert settings.oauth2_token is not None
        assert settings.oauth2_token() == "tok"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="tls"):
        FakeImapServer(tls="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layout"):
        FakeImapServer(layout="french")  # type: ignore[arg-type]


# -- TLS and authentication ------------------------------------------------------------


def test_starttls_mode() -> None:
    with FakeImapServer(tls="starttls", users={USER: PASSWORD}) as server:
        client = IMAPClient(server.host, server.port, ssl=False, timeout=5)
        caps = client.capabilities()
        assert b"STARTTLS" in caps
        assert b"LOGINDISABLED" in caps
        assert b"AUTH=PLAIN" not in caps
        with pytest.raises(LoginError, match="PRIVACYREQUIRED"):
            client.login(USER, PASSWORD)
        client.starttls(server.client_ssl_context())
        caps = client.capabilities()
        assert b"LOGINDISABLED" not in caps
        assert b"AUTH=PLAIN" in caps
        client.login(USER, PASSWORD)
        assert client.list_folders()
        client.logout()


def test_starttls_discards_plaintext_sent_before_the_handshake() -> None:
    with FakeImapServer(tls="starttls", users={USER: PASSWORD}) as server:
        connection = raw(server, login=False)
        connection.send(b"a STARTTLS\r\nb LOGIN injected injected\r\n")
        assert connection.readline().startswith(b"a OK")
        context = server.client_ssl_context()
        connection.sock = context.wrap_socket(connection.sock, server_hostname=server.host)
        connection.buffer = b""
        untagged, result = connection.command(b"CAPABILITY")
        assert result.startswith(b"OK")
        assert not any(line.startswith(b"b ") for line in untagged)
        assert b"AUTH=PLAIN" in untagged[0]
        connection.close()
        assert server.errors == []


def test_starttls_not_offered_in_other_modes(server: FakeImapServer) -> None:
    connection = raw(server, login=False)
    assert connection.command(b"STARTTLS")[1].startswith(b"BAD")
    connection.close()


def test_plaintext_mode() -> None:
    with FakeImapServer(tls="none", users={USER: PASSWORD}) as server:
        assert server.imap_settings().security is Security.NONE
        client = IMAPClient(server.host, server.port, ssl=False, timeout=5)
        assert b"LOGINDISABLED" not in client.capabilities()
        client.login(USER, PASSWORD)
        client.logout()


def test_login_wrong_password_and_unknown_user(server: FakeImapServer) -> None:
    for user, password in ((USER, "wrong"), ("nobody@example.test", PASSWORD)):
        client = connect(server, login=False)
        with pytest.raises(LoginError, match=r"\[AUTHENTICATIONFAILED\]"):
            client.login(user, password)


def test_login_with_quoted_and_literal_credentials() -> None:
    with FakeImapServer(users={'we"ird\\user': "pässwort"}) as server:
        connection = raw(server, login=False)
        _, result = connection.command(b'LOGIN "we\\"ird\\\\user" {9+}\r\np\xc3\xa4sswort')
        assert result.startswith(b"OK"), result
        connection.close()


def test_authenticate_plain(server: FakeImapServer) -> None:
    client = connect(server, login=False)
    client.plain_login(USER, PASSWORD)
    assert client.list_folders()
    client.logout()


def test_authenticate_plain_with_initial_response_and_continuation(server: FakeImapServer) -> None:
    blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    connection = raw(server, login=False)
    assert connection.command(b"AUTHENTICATE PLAIN " + blob)[1].startswith(b"OK")
    connection.close()
    connection = raw(server, login=False)
    connection.send(b"a AUTHENTICATE PLAIN\r\n")
    assert connection.readline() == b"+ "
    connection.send(blob + b"\r\n")
    assert connection.until(b"a")[1].startswith(b"OK")
    connection.close()
    connection = raw(server, login=False)
    connection.send(b"a AUTHENTICATE PLAIN\r\n")
    connection.readline()
    connection.send(b"*\r\n")
    assert connection.until(b"a")[1].startswith(b"BAD")
    assert connection.command(b"AUTHENTICATE PLAIN !!notbase64")[1].startswith(b"BAD")
    wrong = base64.b64encode(f"\0{USER}\0nope".encode())
    assert connection.command(b"AUTHENTICATE PLAIN " + wrong)[1].startswith(b"NO")
    assert connection.command(b"AUTHENTICATE CRAM-MD5")[1].startswith(b"NO")
    connection.close()


def test_authenticate_xoauth2() -> None:
    with FakeImapServer(users={}, tokens={USER: "ya29.token"}) as server:
        client = connect(server, login=False)
        client.oauth2_login(USER, "ya29.token")
        client.logout()
        connection = raw(server, login=False)
        blob = base64.b64encode(f"user={USER}\1auth=Bearer expired\1\1".encode())
        connection.send(b"a AUTHENTICATE XOAUTH2 " + blob + b"\r\n")
        challenge = connection.readline()
        assert challenge.startswith(b"+ ")
        assert json.loads(base64.b64decode(challenge[2:]))["status"] == "400"
        connection.send(b"\r\n")
        assert connection.until(b"a")[1].startswith(b"NO [AUTHENTICATIONFAILED]")
        connection.close()
        client = connect(server, login=False)
        with pytest.raises(LoginError):
            client.oauth2_login(USER, "wrong")


def test_login_reply_fault(server: FakeImapServer) -> None:
    server.login_reply = "NO [UNAVAILABLE] Maintenance"
    client = connect(server, login=False)
    with pytest.raises(LoginError, match="UNAVAILABLE"):
        client.login(USER, PASSWORD)
    server.login_reply = None
    client.login(USER, PASSWORD)
    client.logout()


# -- folders -----------------------------------------------------------------------------


def test_capability_and_namespace(server: FakeImapServer) -> None:
    client = connect(server)
    caps = set(client.capabilities())
    expected = {b"IMAP4REV1", b"SPECIAL-USE", b"UIDPLUS", b"MOVE", b"IDLE", b"LITERAL+"}
    assert expected | {b"NAMESPACE", b"MULTIAPPEND"} <= caps
    assert client.namespace().personal == (("", "/"),)
    server.omit_capabilities = {"MOVE"}
    assert b"MOVE" not in connect(server).capabilities()


def test_english_layout_list_and_lsub(server: FakeImapServer) -> None:
    client = connect(server)
    listed = {name: attrs for attrs, _, name in client.list_folders()}
    assert list(listed) == ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]
    assert b"\\Archive" in listed["Archive"]
    assert client.find_special_folder(b"\\Junk") == "Junk"
    assert [name for _, _, name in client.list_sub_folders()] == list(listed)
    client.create_folder("Extra")
    assert "Extra" not in [name for _, _, name in client.list_sub_folders()]
    client.subscribe_folder("Extra")
    assert "Extra" in [name for _, _, name in client.list_sub_folders()]
    client.unsubscribe_folder("Extra")
    assert server.folders() == ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive", "Extra"]
    connection = raw(server)
    untagged, _ = connection.command(b'LIST "" ""')
    assert untagged == [b'* LIST (\\Noselect) "/" ""']
    untagged, _ = connection.command(b'LIST (SPECIAL-USE) "" "*"')
    assert len(untagged) == 5
    untagged, _ = connection.command(b'LIST "" ("INBOX" "Sent") RETURN (SUBSCRIBED)')
    assert len(untagged) == 2
    assert all(b"\\Subscribed" in line for line in untagged)
    untagged, _ = connection.command(b'LIST "" "inbox"')
    assert untagged == [b'* LIST (\\HasNoChildren) "/" "INBOX"']
    connection.close()


def test_german_layout_uses_modified_utf7() -> None:
    with FakeImapServer(users={USER: PASSWORD}, layout="german") as server:
        client = connect(server)
        listed = client.list_folders()
        assert [name for _, _, name in listed] == ["INBOX", "Gesendet", "Entwürfe", "Papierkorb"]
        assert all(attrs == (b"\\HasNoChildren",) for attrs, _, _ in listed)
        assert client.find_special_folder(b"\\Sent") is None
        connection = raw(server)
        untagged, _ = connection.command(b'LIST "" "Entw*"')
        assert untagged == [b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"']
        assert connection.command(b"SELECT Entw&APw-rfe")[1].startswith(b"OK")
        assert connection.command(b'SELECT "Entw\xc3\xbcrfe"')[1].startswith(b"NO")
        connection.close()
        client.append("Entwürfe", MESSAGE)
        assert len(server.messages("Entwürfe")) == 1


def test_gmail_layout() -> None:
    with FakeImapServer(users={USER: PASSWORD}, layout="gmail") as server:
        client = connect(server)
        listed = {name: attrs for attrs, _, name in client.list_folders()}
        assert b"\\Noselect" in listed["[Gmail]"]
        assert b"\\HasChildren" in listed["[Gmail]"]
        assert b"\\All" in listed["[Gmail]/All Mail"]
        assert client.find_special_folder(b"\\Sent") == "[Gmail]/Sent Mail"
        assert [name for _, _, name in client.list_folders(pattern="%")] == ["INBOX", "[Gmail]"]
        with pytest.raises(IMAPClientError, match="not selectable"):
            client.select_folder("[Gmail]")
        client.append("[Gmail]/Sent Mail", MESSAGE)
        assert server.messages("[Gmail]/Sent Mail")[0].data == MESSAGE


def test_dotted_layout() -> None:
    with FakeImapServer(users={USER: PASSWORD}, layout="dotted") as server:
        client = connect(server)
        assert client.namespace().personal == (("INBOX.", "."),)
        listed = {name: (attrs, delimiter) for attrs, delimiter, name in client.list_folders()}
        assert listed["INBOX"] == ((b"\\HasChildren",), b".")
        assert b"\\Sent" in listed["INBOX.Sent"][0]
        assert client.find_special_folder(b"\\Sent") == "INBOX.Sent"
        client.create_folder("INBOX.Kunden.2026")
        names = [name for _, _, name in client.list_folders("INBOX.", "%")]
        assert names == ["INBOX.Sent", "INBOX.Drafts", "INBOX.Trash", "INBOX.Kunden"]


def test_create_delete_rename_and_errors(server: FakeImapServer) -> None:
    client = connect(server)
    client.create_folder("A/B")
    listed = {name: attrs for attrs, _, name in client.list_folders()}
    assert listed["A"] == (b"\\Noselect", b"\\HasChildren")
    client.create_folder("A")
    with pytest.raises(IMAPClientError, match="ALREADYEXISTS"):
        client.create_folder("A")
    with pytest.raises(IMAPClientError, match="children"):
        client.delete_folder("A")
    client.rename_folder("A", "C")
    assert {"C", "C/B"} <= set(server.folders())
    client.delete_folder("C/B")
    client.delete_folder("C")
    with pytest.raises(IMAPClientError, match="NONEXISTENT"):
        client.delete_folder("C")
    with pytest.raises(IMAPClientError):
        client.delete_folder("INBOX")
    with pytest.raises(IMAPClientError):
        client.create_folder("inbox")


# -- messages -----------------------------------------------------------------------------


def test_append_with_flags_date_and_fetch_items(server: FakeImapServer) -> None:
    client = connect(server)
    when = dt.datetime(2026, 2, 2, 11, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    response = client.append("Sent", MESSAGE, flags=[b"\\Seen", b"$Sent"], msg_time=when)
    uidvalidity = server.imap_settings() and client.folder_status("Sent")[b"UIDVALIDITY"]
    assert response == b"[APPENDUID %d 1] Append completed." % uidvalidity
    [stored] = server.messages("Sent")
    assert stored == ImapMessage(1, frozenset({"\\Seen", "$Sent"}), when, MESSAGE)
    client.select_folder("Sent")
    items = ["ENVELOPE", "RFC822", "RFC822.HEADER", "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]"]
    data = client.fetch([1], ["INTERNALDATE", "RFC822.SIZE", *items])[1]
    assert data[b"INTERNALDATE"] == when
    assert data[b"RFC822.SIZE"] == len(MESSAGE)
    assert data[b"ENVELOPE"].subject == b"Invoice 7"
    assert data[b"ENVELOPE"].from_[0].name == b"Billing"
    assert data[b"ENVELOPE"].message_id == b"<inv-7@example.test>"
    assert data[b"RFC822"] == MESSAGE
    assert data[b"RFC822.HEADER"] == MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert b"Subject" not in data[b"BODY[HEADER.FIELDS.NOT (SUBJECT)]"]
    fast = client.fetch([1], ["FAST"])[1]
    assert set(fast) == {b"SEQ", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"}


def test_fetch_mime_parts_and_partial(server: FakeImapServer) -> None:
    server.seed("INBOX", MULTIPART)
    client = connect(server)
    client.select_folder("INBOX")
    items = [
        "BODYSTRUCTURE",
        "BODY.PEEK[1]",
        "BODY.PEEK[2]",
        "BODY.PEEK[2.MIME]",
        "BODY.PEEK[]<0.4>",
    ]
    data = client.fetch([1], items)[1]
    structure = data[b"BODYSTRUCTURE"]
    assert structure.is_multipart
    assert structure[1] == b"mixed"
    assert structure[0][0][:3] == (b"text", b"plain", (b"charset", b"utf-8"))
    assert structure[0][1][:2] == (b"application", b"pdf")
    assert data[b"BODY[1]"] == b"hello"
    assert data[b"BODY[2]"] == b"JVBERi0K"
    assert data[b"BODY[2.MIME]"].startswith(b"Content-Type: application/pdf\r\n")
    assert data[b"BODY[]<0>"] == b"From"
    assert client.fetch([1], ["BODY.PEEK[3]"])[1][b"BODY[3]"] == b""


def test_multiappend_and_literal_plus(server: FakeImapServer) -> None:
    client = connect(server)
    response = client.multiappend("INBOX", [MESSAGE, {"msg": MULTIPART, "flags": [b"\\Draft"]}])
    assert response[1][0].startswith(b"[APPENDUID")
    assert b" 1:2]" in response[1][0]
    assert [m.flags for m in server.messages("INBOX")] == [frozenset(), {"\\Draft"}]


def test_append_errors(server: FakeImapServer) -> None:
    client = connect(server)
    with pytest.raises(IMAPClientError, match="TRYCREATE"):
        client.append("Nowhere", MESSAGE)
    connection = raw(server)
    assert connection.command(b'APPEND "INBOX" (\\Bogus) {1+}\r\nx')[1].startswith(b"BAD")
    assert connection.command(b'APPEND "INBOX" "99-Foo-2020 00:00:00 +0000" {1+}\r\nx')[
        1
    ].startswith(b"BAD")
    assert connection.command(b'APPEND "INBOX" "just a string"')[1].startswith(b"BAD")
    connection.close()
    assert server.messages("INBOX") == []


def test_seed_and_read_access(server: FakeImapServer) -> None:
    when = dt.datetime(2025, 12, 24, 18, 0, tzinfo=dt.UTC)
    assert server.seed("Archive", MESSAGE, flags=["\\seen", "$Old"], internal_date=when) == 1
    assert server.seed("Archive", MULTIPART) == 2
    [first, second] = server.messages("Archive")
    assert first.flags == {"\\Seen", "$Old"}
    assert first.internal_date == when
    assert second.data == MULTIPART
    with pytest.raises(KeyError):
        server.seed("Missing", MESSAGE)
    server.create_folder("Rechnungen", "\\Archive")
    assert "Rechnungen" in server.folders()
    client = connect(server)
    assert client.select_folder("Archive")[b"EXISTS"] == 2
    assert client.get_flags([1])[1] == (b"$Old", b"\\Seen")


def test_users_have_separate_mailboxes() -> None:
    with FakeImapServer(users={"a@x.test": "a", "b@x.test": "b"}) as server:
        server.seed("INBOX", MESSAGE, user="b@x.test")
        assert server.messages("INBOX") == []
        assert len(server.messages("INBOX", user="b@x.test")) == 1
        assert server.imap_settings().username is None


def test_sequence_sets_and_search_keys(server: FakeImapServer) -> None:
    for day in (1, 2, 3, 4):
        server.seed(
            "INBOX",
            MESSAGE.replace(b"Invoice 7", b"Invoice %d" % day),
            internal_date=dt.datetime(2026, 1, day, 12, tzinfo=dt.UTC),
        )
    client = connect(server)
    client.select_folder("INBOX")
    connection = raw(server)
    connection.command(b"SELECT INBOX")
    for sequence_set, expected in ((b"2:*", [2, 3, 4]), (b"*", [4]), (b"1,3:4", [1, 3, 4])):
        untagged, _ = connection.command(b"FETCH " + sequence_set + b" (UID)")
        assert untagged == [b"* %d FETCH (UID %d)" % (n, n) for n in expected]
    untagged, _ = connection.command(b"UID FETCH 3:* (FLAGS)")
    assert untagged == [b"* 3 FETCH (UID 3 FLAGS ())", b"* 4 FETCH (UID 4 FLAGS ())"]
    untagged, _ = connection.command(b"UID FETCH 9:* (FLAGS)")  # n:* includes the last one
    assert untagged == [b"* 4 FETCH (UID 4 FLAGS ())"]
    assert client.search(["UID", "2:3"]) == [2, 3]
    assert client.search(["SINCE", dt.date(2026, 1, 3)]) == [3, 4]
    assert client.search(["BEFORE", dt.date(2026, 1, 2)]) == [1]
    assert client.search(["ON", dt.date(2026, 1, 2)]) == [2]
    assert client.search(["OR", "SUBJECT", "Invoice 1", "SUBJECT", "Invoice 4"]) == [1, 4]
    assert client.search(["NOT", "UID", "1:2"]) == [3, 4]
    assert client.search(["SENTSINCE", dt.date(2026, 2, 2)]) == [1, 2, 3, 4]
    assert client.search(["FROM", "billing", "TEXT", "pay", "LARGER", 10]) == [1, 2, 3, 4]
    assert client.search(["BODY", "nothing"]) == []
    with pytest.raises(IMAPClientError):
        client.search(["FROBNICATE"])
    untagged, _ = connection.command(b"SEARCH CHARSET UTF-8 (SEEN) ALL")
    assert untagged == [b"* SEARCH"]
    assert connection.command(b"FETCH 9 (FLAGS)")[1].startswith(b"BAD")
    assert connection.command(b"FETCH 0 (FLAGS)")[1].startswith(b"BAD")
    assert connection.command(b"UID FETCH 99 (FLAGS)")[1].startswith(b"OK")
    connection.close()


def test_store_variants(server: FakeImapServer) -> None:
    server.seed("INBOX", MESSAGE)
    connection = raw(server)
    connection.command(b"SELECT INBOX")
    untagged, _ = connection.command(b"STORE 1 +FLAGS (\\Flagged $A)")
    assert untagged == [b"* 1 FETCH (FLAGS ($A \\Flagged))"]
    untagged, _ = connection.command(b"UID STORE 1 -FLAGS.SILENT ($A)")
    assert untagged == []
    untagged, _ = connection.command(b"UID STORE 1 FLAGS \\seen")
    assert untagged == [b"* 1 FETCH (UID 1 FLAGS (\\Seen))"]
    assert connection.command(b"STORE 1 +FLAGS (\\Recent)")[1].startswith(b"BAD")
    assert connection.command(b"STORE 1 REPLACE (x)")[1].startswith(b"BAD")
    connection.command(b"EXAMINE INBOX")
    assert connection.command(b"STORE 1 +FLAGS (x)")[1].startswith(b"OK Store ignored")
    assert server.messages("INBOX")[0].flags == {"\\Seen"}
    connection.close()


def test_copy_move_expunge_close(server: FakeImapServer) -> None:
    for _ in range(3):
        server.seed("INBOX", MESSAGE)
    client = connect(server)
    client.select_folder("INBOX")
    connection = raw(server)
    connection.command(b"SELECT INBOX")
    assert connection.command(b"UID COPY 1:2 Archive")[1].startswith(
        b"OK [COPYUID %d 1:2 1:2]" % client.folder_status("Archive")[b"UIDVALIDITY"]
    )
    assert connection.command(b"COPY 1 Nowhere")[1].startswith(b"NO [TRYCREATE]")
    untagged, result = connection.command(b"MOVE 2 Trash")
    assert result.startswith(b"OK")
    assert untagged[0].startswith(b"* OK [COPYUID")
    assert untagged[1] == b"* 2 EXPUNGE"
    assert connection.command(b"UID MOVE 99 Trash")[1].startswith(b"OK")
    client.add_flags([1], [b"\\Deleted"])
    untagged, _ = connection.command(b"NOOP")
    assert untagged == [b"* 1 FETCH (FLAGS (\\Deleted))"] or untagged == []
    connection.command(b"CLOSE")
    assert [m.uid for m in server.messages("INBOX")] == [3]
    assert len(server.messages("Trash")) == 1
    assert len(server.messages("Archive")) == 2
    assert connection.command(b"FETCH 1 (FLAGS)")[1].startswith(b"BAD")
    connection.command(b"SELECT INBOX")
    assert connection.command(b"UNSELECT")[1].startswith(b"OK")
    connection.close()


def test_other_sessions_see_expunges_and_new_messages(server: FakeImapServer) -> None:
    server.seed("INBOX", MESSAGE)
    server.seed("INBOX", MESSAGE)
    watcher = raw(server)
    watcher.command(b"SELECT INBOX")
    client = connect(server)
    client.select_folder("INBOX")
    client.delete_messages([1])
    client.expunge()
    server.seed("INBOX", MESSAGE)
    untagged, _ = watcher.command(b"FETCH 1:* (UID)")
    assert b"* 1 EXPUNGE" not in untagged  # not during FETCH
    assert untagged[-1] == b"* 3 EXISTS"
    untagged, _ = watcher.command(b"NOOP")
    assert untagged == [b"* 1 EXPUNGE"]
    watcher.close()


def test_idle_done(server: FakeImapServer) -> None:
    client = connect(server)
    client.select_folder("INBOX")
    client.idle()
    assert client.idle_check(timeout=0.2) == []
    server.seed("INBOX", MESSAGE)
    assert client.idle_check(timeout=5) == [(1, b"EXISTS")]
    client.idle_done()
    assert client.noop()[0].startswith(b"NOOP")


def test_change_uidvalidity(server: FakeImapServer) -> None:
    server.seed("Sent", MESSAGE)
    client = connect(server)
    before = client.select_folder("Sent")[b"UIDVALIDITY"]
    after = server.change_uidvalidity("Sent")
    assert after != before
    assert client.select_folder("Sent")[b"UIDVALIDITY"] == after
    assert client.folder_status("Sent", [b"UIDVALIDITY"])[b"UIDVALIDITY"] == after


# -- faults ---------------------------------------------------------------------------


def test_append_reply_fault(server: FakeImapServer) -> None:
    server.append_reply = "NO [OVERQUOTA] Quota exceeded"
    client = connect(server)
    with pytest.raises(IMAPClientError, match=r"\[OVERQUOTA\] Quota exceeded"):
        client.append("Sent", MESSAGE)
    assert server.messages("Sent") == []
    server.append_reply = None
    client.append("Sent", MESSAGE)
    assert len(server.messages("Sent")) == 1


def test_drop_on_fault(server: FakeImapServer) -> None:
    server.drop_on = "APPEND"
    client = connect(server)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.append("Sent", MESSAGE)
    server.drop_on = "UID FETCH"
    client = connect(server)
    client.select_folder("INBOX")
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.fetch([1], ["FLAGS"])
    assert server.messages("Sent") == []


def test_stall_seconds_delays_tagged_responses(server: FakeImapServer) -> None:
    client = connect(server)
    server.stall_seconds = 0.3
    began = time.monotonic()
    client.noop()
    assert time.monotonic() - began >= 0.3
    server.stall_seconds = 0


def test_drop_connections(server: FakeImapServer) -> None:
    client = connect(server)
    server.drop_connections()
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.noop()


# -- robustness -----------------------------------------------------------------------


def test_bad_input_never_crashes_the_server(server: FakeImapServer) -> None:
    connection = raw(server)
    for line in (
        b"a1 SELECT (((",
        b"a2 SELECT )",
        b'a3 LOGIN "no end',
        b"a4 FETCH",
        b"a5 SELECT INBOX [",
        b"a6 \x00\xff\xfe",
        b"a7 UID",
        b"a8 UID FROBNICATE 1",
        b"a9 SEARCH OR ALL",
        b"b1 STATUS INBOX (BOGUS)",
        b"b2 LIST",
        b'b3 SELECT "bad \\q escape"',
        b"b4 FETCH 1:* (BODY[HEADER.FIELDS)]",
        b"b5 IDLE",
        b"b6 NOOP \rstray",  # bare CR, as in TLS bytes sent to a plaintext port
        b"b7 SELECT (a\rb)",
    ):
        connection.send(line + b"\r\n")
        tag = line.split(b" ", 1)[0]
        for _ in range(5):
            reply = connection.readline()
            if reply.startswith(b"+ idling"):
                connection.send(b"NOTDONE\r\n")
            if reply.startswith(tag + b" "):
                break
        assert reply.startswith(tag + b" BAD"), (line, reply)
    connection.send(b"\r\n" + b"(((\r\n")
    assert connection.readline().startswith(b"* BAD")
    assert connection.command(b"NOOP")[1].startswith(b"OK")
    connection.close()
    assert server.errors == []


def test_every_byte_after_a_command_ends_in_tokens_or_a_parse_error() -> None:
    """No byte makes the tokenizer stand still (a bare CR once made it loop forever)."""
    for byte in range(256):
        for line in (b"a1 NOOP " + bytes([byte]) + b"x", b"a1 NOOP (" + bytes([byte]) + b")"):
            try:
                tokens = tokenize(line)
            except ParseError:
                continue
            assert len(tokens) <= 4, (line, tokens)


def test_size_limits() -> None:
    with FakeImapServer(users={USER: PASSWORD}, max_literal=100) as server:
        connection = raw(server)
        assert connection.command(b"APPEND INBOX {101}")[1].startswith(b"NO [TOOBIG]")
        connection.send(b"a APPEND INBOX {101+}\r\n")
        assert connection.readline().startswith(b"* BYE")
        connection.close()
        connection = raw(server)
        connection.send(b"a NOOP " + b"x" * 70_000 + b"\r\n")
        assert connection.readline().startswith(b"* BYE")
        with pytest.raises((ConnectionError, OSError)):
            connection.readline()
        connection.close()
        assert server.errors == []


def test_commands_need_the_right_state(server: FakeImapServer) -> None:
    connection = raw(server, login=False)
    assert connection.command(b"SELECT INBOX")[1].startswith(b"BAD")
    assert connection.command(b"ID NIL")[0] == [b'* ID ("name" "FakeImapServer")']
    connection.login(USER, PASSWORD)
    assert connection.command(b"LOGIN a b")[1].startswith(b"BAD")
    assert connection.command(b"EXPUNGE")[1].startswith(b"BAD")
    untagged, result = connection.command(b"LOGOUT")
    assert untagged == [b"* BYE Logging out"]
    assert result.startswith(b"OK")
    connection.close()


def test_ssl_client_without_trust_is_rejected(server: FakeImapServer) -> None:
    with pytest.raises(ssl.SSLError):
        IMAPClient(server.host, server.port, ssl=True, ssl_context=ssl.create_default_context())
