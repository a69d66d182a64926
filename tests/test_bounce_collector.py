"""BounceCollector (exactly once, other mail untouched) and tying bounces to sent messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailbridge import SmtpSettings
from mailbridge.bounces import (
    BounceCollector,
    BounceEvent,
    MemorySentIndex,
    SentRef,
    correlate,
    parse_bounce,
    verp_token,
)
from mailbridge.imap import Checkpoint
from mailbridge.testing import FakeImapServer

USER = "billing@acme.example"


def dsn(
    recipient: str,
    *,
    envid: str | None = None,
    message_id: str | None = None,
    status: str = "5.1.1",
    action: str = "failed",
    to: str = USER,
    failed_header: bool = False,
) -> bytes:
    """A Postfix-style DSN; the returned headers carry `message_id` when given."""
    envelope = f"Original-Envelope-Id: {envid}\n" if envid else ""
    returned = (
        f"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {message_id}\nTo: {recipient}\n\n"
        if message_id
        else ""
    )
    failed = f"X-Failed-Recipients: {recipient}\n" if failed_header else ""
    text = (
        f"From: MAILER-DAEMON@mx.acme.example\nTo: {to}\nDelivered-To: {to}\n{failed}"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nIt bounced.\n\n"
        f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.acme.example\n"
        f"{envelope}\nFinal-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; 550 {status} no such user\n\n{returned}--B--\n"
    )
    return text.replace("\n", "\r\n").encode()


ORDINARY = (
    b"From: Customer <c@customer.example>\r\nTo: billing@acme.example\r\n"
    b"Subject: Question\r\n\r\nHi.\r\n"
)
VACATION = (
    b"From: d@customer.example\r\nTo: billing@acme.example\r\nSubject: Out of office\r\n"
    b"Auto-Submitted: auto-replied\r\nIn-Reply-To: <m1@acme.example>\r\n\r\nAway.\r\n"
)


@pytest.fixture
def server() -> Iterator[FakeImapServer]:
    with FakeImapServer(users={USER: "pw"}) as fake:
        yield fake


def test_collects_each_bounce_once_and_leaves_other_mail_alone(server: FakeImapServer) -> None:
    index = MemorySentIndex()
    index.add("<m1@acme.example>", envelope_id="env1", recipients=("gone@customer.example",))
    ordinary = server.seed("INBOX", ORDINARY, flags=["\\Seen"])
    vacation = server.seed("INBOX", VACATION)
    bounce = server.seed("INBOX", dsn("gone@customer.example", envid="env1"))
    collector = BounceCollector(server.imap_settings(), index=index)

    batch = collector.fetch()
    (event,) = batch.events
    assert (event.uid, event.message_id, event.envelope_id, event.matched_by) == (
        bounce,
        "<m1@acme.example>",
        "env1",
        "envelope_id",
    )
    assert event.statuses() == {"gone@customer.example": "bounced"}
    assert event.report.recipients[0].reason == "user_unknown"
    assert batch.scanned == 3 and batch.uids == (bounce,)
    assert all(not m.flags - {"\\Seen"} for m in server.messages("INBOX"))  # fetch changed nothing

    checkpoint = collector.commit(batch)
    flags = {m.uid: m.flags for m in server.messages("INBOX")}
    assert flags == {ordinary: {"\\Seen"}, vacation: set(), bounce: {"$BounceProcessed"}}
    assert collector.fetch(checkpoint).events == ()  # exactly once, by checkpoint...
    assert collector.fetch().events == ()  # ... and by keyword
    assert collector.fetch(Checkpoint(checkpoint.uidvalidity + 1, 0)).events == ()


def test_moves_reports_and_calls_the_hook_before_committing(server: FakeImapServer) -> None:
    server.create_folder("Bounces")
    server.seed("INBOX", ORDINARY)
    server.seed(
        "INBOX",
        dsn(
            "late@customer.example",
            message_id="<m2@acme.example>",
            status="4.4.1",
            action="delayed",
        ),
    )
    seen: list[BounceEvent] = []

    def failing(event: BounceEvent) -> None:
        raise RuntimeError("database down")

    settings = server.imap_settings()
    with pytest.raises(RuntimeError):
        BounceCollector(settings, move_to="Bounces", on_event=failing).run()
    assert len(server.messages("INBOX")) == 2  # nothing committed: it comes again

    batch = BounceCollector(settings, move_to="Bounces", on_event=seen.append).run()
    assert [e.statuses() for e in seen] == [{"late@customer.example": "delayed"}]
    assert seen[0].matched_by == "message_id" and seen[0].message_id == "<m2@acme.example>"
    assert [m.data for m in server.messages("INBOX")] == [ORDINARY]
    assert len(server.messages("Bounces")) == 1 and batch.uids


def test_auto_replies_are_collected_only_when_asked(server: FakeImapServer) -> None:
    server.seed("INBOX", VACATION)
    settings = server.imap_settings()
    assert BounceCollector(settings).run().events == ()
    (event,) = BounceCollector(settings, kinds=("auto_reply",)).run().events
    assert event.report.kind == "auto_reply" and event.message_id == "<m1@acme.example>"
    assert event.statuses() == {}


def test_correlation_order_envid_message_id_verp_failed_recipients() -> None:
    index = MemorySentIndex()
    first = index.add("<a@x>", envelope_id="E1", recipients=("r@c.example",), verp_token="t1")
    second = index.add("<b@x>", envelope_id="E2", recipients=("s@c.example",), verp_token="t2")
    by_envid = parse_bounce(dsn("r@c.example", envid="E2", message_id="<a@x>"))
    assert by_envid is not None
    assert correlate(by_envid, index=index).message_id == second.message_id  # ENVID wins
    by_id = parse_bounce(dsn("r@c.example", message_id="<a@x>"))
    assert by_id is not None
    assert correlate(by_id, index=index) == correlate(by_id, index=index)
    assert correlate(by_id, index=index).matched_by == "message_id"
    assert correlate(by_id, index=index).envelope_id == "E1"
    bare = parse_bounce(dsn("s@c.example", failed_header=True))
    assert bare is not None
    assert correlate(bare, index=index, verp="t1").message_id == first.message_id
    assert correlate(bare, index=index, verp="t1").matched_by == "verp"
    assert correlate(bare, index=index).matched_by == "failed_recipients"
    assert correlate(bare, index=index).message_id == "<b@x>"
    assert correlate(bare).matched_by is None  # no index: nothing to guess from
    assert correlate(by_envid).message_id == "<a@x>"  # no index: what the bounce names
    assert index.lookup("recipient", "S@C.EXAMPLE") == SentRef("<b@x>", "E2")


def test_verp_token_from_the_envelope_recipient_headers() -> None:
    raw = dsn("x@c.example", to="bounces+0123456789abcdef@app.example")
    assert verp_token(raw, "bounces@app.example") == "0123456789abcdef"
    assert verp_token(raw, "other@app.example") is None
    assert verp_token(dsn("x@c.example"), "bounces@app.example") is None


def test_relay_verp_tag_round_trips_through_the_index() -> None:
    from mailbridge import PlatformRelay

    relay = PlatformRelay(
        smtp=SmtpSettings("relay.app.example", 587, "starttls"),
        app_name="App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        verp=True,
    )
    sender = relay.envelope_sender("<m9@app.example>").envelope_address
    index = MemorySentIndex()
    index.add("<m9@app.example>", verp_token=relay.bounce_token("<m9@app.example>"))
    raw = dsn("gone@c.example", to=sender)
    report = parse_bounce(raw)
    assert report is not None
    token = verp_token(raw, "bounces@app.example")
    assert correlate(report, index=index, verp=token).message_id == "<m9@app.example>"


def test_only_the_start_of_a_large_bounce_is_downloaded(server: FakeImapServer) -> None:
    returned = b"\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nTo: decoy@x.example\r\n\r\n"
    big = dsn("gone@customer.example").replace(b"--B--", returned[2:] + b"x" * 3_000_000)
    server.seed("INBOX", big)
    collector = BounceCollector(server.imap_settings(), max_message_bytes=64 * 1024)
    (event,) = collector.fetch().events
    assert [r.address for r in event.report.recipients] == ["gone@customer.example"]
    assert event.report.recipients[0].summary == "bounced: user unknown (5.1.1)"


def test_collector_settings_are_checked() -> None:
    from mailbridge import ConfigurationError, ImapSettings

    settings = ImapSettings("127.0.0.1", 993, "implicit_tls", username="u", password="p")
    with pytest.raises(ConfigurationError, match="mark"):
        BounceCollector(settings, mark=None)
    with pytest.raises(ConfigurationError, match="max_message_bytes"):
        BounceCollector(settings, max_message_bytes=10)
    with pytest.raises(ConfigurationError, match="timeout"):
        BounceCollector(settings).fetch(timeout=float("nan"))


def test_a_server_without_move_gets_the_keyword_instead(server: FakeImapServer) -> None:
    server.create_folder("Bounces")
    server.omit_capabilities = {"MOVE"}
    ordinary = server.seed("INBOX", ORDINARY, flags=["\\Deleted"])
    bounce = server.seed("INBOX", dsn("gone@customer.example"))
    seen: list[BounceEvent] = []
    collector = BounceCollector(server.imap_settings(), move_to="Bounces", on_event=seen.append)
    batch = collector.run()
    assert batch.uids == (bounce,) and len(seen) == 1
    flags = {m.uid: m.flags for m in server.messages("INBOX")}
    assert flags == {ordinary: {"\\Deleted"}, bounce: {"$BounceProcessed"}}  # nothing expunged
    assert server.messages("Bounces") == []
    assert collector.run().events == () and len(seen) == 1  # not collected again


def test_headers_too_large_together_are_read_one_by_one(server: FakeImapServer) -> None:
    bulky = b"X-Padding: " + b"p" * 50_000 + b"\r\n" + ORDINARY  # each alone within the limits
    for _ in range(30):
        server.seed("INBOX", bulky)
    bounce = server.seed("INBOX", dsn("gone@customer.example"))
    batch = BounceCollector(server.imap_settings(), max_message_bytes=1024).fetch()
    assert batch.uids == (bounce,) and batch.problems == ()  # not lost behind the checkpoint
    assert batch.scanned == 31


def test_a_report_that_could_not_be_read_comes_again_with_the_checkpoint(
    server: FakeImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailbridge.bounces import _collector
    from mailbridge.imap._failures import unusable_answer

    first = server.seed("INBOX", dsn("one@customer.example"))
    second = server.seed("INBOX", dsn("two@customer.example"))
    server.seed("INBOX", ORDINARY)
    original = _collector.FolderSession._open

    def flaky(self: object) -> object:  # the server answers NO to one message's body, once
        client = original(self)  # type: ignore[arg-type]
        fetch = client.fetch

        def refusing(uids: list[int], items: list[str]) -> object:
            if list(uids) == [first] and items[0].startswith("BODY.PEEK[]"):
                raise unusable_answer("FETCH", "a test's refusal")
            return fetch(uids, items)

        client.fetch = refusing  # type: ignore[method-assign]
        return client

    collector = BounceCollector(server.imap_settings())
    with monkeypatch.context() as patch:
        patch.setattr(_collector.FolderSession, "_open", flaky)
        batch = collector.run()
    assert batch.uids == (second,) and [uid for uid, _ in batch.problems] == [first]
    assert batch.checkpoint.last_uid == first - 1  # not past the unread report
    again = collector.run(batch.checkpoint)
    assert again.uids == (first,) and again.checkpoint.last_uid == first + 2
