"""The loop closed against real servers: Postfix bounces, Dovecot stores, BounceCollector reads.

A Postfix + Dovecot pair of its own (module scope): Postfix accepts mail for
``ghost@example.test`` (a user Dovecot does not know, so its LMTP answers 550 5.1.1),
Dovecot enforces a 20 KB quota (LMTP answers 552 5.2.2), and mail for
``big@example.test`` goes over SMTP to a second Postfix listener that takes at most
50 KB (Postfix's client bounces 5.3.4). So the three classic bounces come from the
real servers: unknown user, mailbox full, message too big. `REGENERATE=1` writes
them to tests/bounce_corpus/postfix/.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge import Attachment, DeliveryClient, DocumentEmail
from mailbridge.bounces import BounceCollector, MemorySentIndex, parse_bounce
from mailbridge.testing.realservers import RealMailServers, availability

from .conftest import ALICE, ALICE_PASSWORD, alice_imap, alice_smtp, require

pytestmark = pytest.mark.realserver

GHOST, BOB, BIG = "ghost@example.test", "bob@example.test", "big@example.test"
CORPUS = Path(__file__).parent / "bounce_corpus" / "postfix"


class BouncingServers(RealMailServers):
    """Postfix that accepts users Dovecot lacks, a small second listener; Dovecot's quota."""

    def __init__(self, directory: Path, users: dict[str, str]) -> None:
        super().__init__(directory, users)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.small_port = probe.getsockname()[1]

    def _postfix_main_cf(self) -> str:
        mailboxes = ", ".join(f"{address}=ok" for address in (*self.users, GHOST, BIG))
        return super()._postfix_main_cf() + (
            f"virtual_mailbox_maps = inline:{{ {mailboxes} }}\n"
            f"transport_maps = inline:{{ {self.discard_domain}=discard:,"
            f" {BIG}=smtp:[127.0.0.1]:{self.small_port} }}\n"
        )

    def _postfix_master_cf(self) -> str:
        return super()._postfix_master_cf() + (
            f"127.0.0.1:{self.small_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/small\n  -o message_size_limit=50000\n"
            "  -o myhostname=small.other.test\n"
        )

    def _dovecot_config(self, uid: int, gid: int, users_file: Path) -> str:
        return super()._dovecot_config(uid, gid, users_file) + (
            "mail_plugins = $mail_plugins quota\n"
            "plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n"
            "  quota_rule = *:storage=20K\n}\n"
        )


@pytest.fixture(scope="module")
def servers() -> Iterator[RealMailServers]:
    require(availability(), "real-server")
    directory = Path(tempfile.mkdtemp(prefix="mailbridge-bounces-"))
    users = {ALICE: ALICE_PASSWORD, BOB: "bob-Secret-2"}
    try:
        with BouncingServers(directory, users=users) as started:
            yield started
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _send(servers: RealMailServers, to: str, size: int = 0) -> tuple[str, str | None]:
    attachments = [Attachment("scan.pdf", b"%PDF-1.4\n" + os.urandom(size))] if size else []
    email = DocumentEmail(
        to=to, subject="Invoice 2026-17", body="Attached.", attachments=attachments
    )
    with DeliveryClient.own_smtp(ALICE, alice_smtp(servers)) as client:
        result = client.send(email)
    assert result.accepted == (to,)
    return result.message_id, result.envelope_id


def _keep(name: str, raw: bytes) -> None:
    """With REGENERATE=1, store a captured bounce in the corpus (addresses kept: all .test)."""
    if os.environ.get("REGENERATE"):
        CORPUS.mkdir(exist_ok=True)
        (CORPUS / name).write_bytes(raw)


def test_unknown_user_bounce_is_collected_and_tied_to_the_message(
    servers: RealMailServers,
) -> None:
    servers.clear_mailboxes()
    message_id, envelope_id = _send(servers, GHOST)
    index = MemorySentIndex()
    index.add(message_id, envelope_id=envelope_id, recipients=(GHOST,))
    (raw,) = servers.wait_for_messages(ALICE)
    _keep("unknown-user.eml", raw)
    collected: list[object] = []
    collector = BounceCollector(alice_imap(servers), index=index, on_event=collected.append)

    batch = collector.run()

    (event,) = batch.events
    assert collected == [event]
    (recipient,) = event.report.recipients
    assert (recipient.address, recipient.action, recipient.status, recipient.reason) == (
        GHOST,
        "failed",
        "5.1.1",
        "user_unknown",
    )
    assert recipient.permanent and recipient.reply_code == 550
    assert (event.message_id, event.envelope_id, event.matched_by) == (
        message_id,
        envelope_id,
        "envelope_id",
    )
    assert event.report.original_message_id == message_id  # the returned headers agree
    assert event.statuses() == {GHOST: "bounced"}
    assert collector.run(batch.checkpoint).events == ()  # exactly once


@pytest.mark.parametrize(
    ("to", "size", "status", "reason", "name"),
    [
        (BOB, 30_000, "5.2.2", "mailbox_full", "mailbox-full.eml"),
        (BIG, 60_000, "5.3.4", "message_too_big", "message-too-big.eml"),
    ],
)
def test_quota_and_size_bounces_are_read_right(
    servers: RealMailServers, to: str, size: int, status: str, reason: str, name: str
) -> None:
    servers.clear_mailboxes()
    message_id, envelope_id = _send(servers, to, size)
    (raw,) = servers.wait_for_messages(ALICE)
    _keep(name, raw)
    report = parse_bounce(raw)
    assert report is not None and report.kind == "dsn"
    (recipient,) = report.recipients
    assert (recipient.address, recipient.action, recipient.status, recipient.reason) == (
        to,
        "failed",
        status,
        reason,
    )
    assert recipient.permanent
    assert (report.original_message_id, report.original_envelope_id) == (message_id, envelope_id)


def test_outbox_message_to_an_unknown_user_shows_bounced(
    servers: RealMailServers, tmp_path: Path
) -> None:
    """Outbox → worker → Postfix (DSN, ENVID) → bounce in the INBOX → collector → status."""
    from mailbridge.deliverability import SqliteSuppressionList
    from mailbridge.outbox import Outbox, State

    servers.clear_mailboxes()

    def resolve(tenant: str) -> DeliveryClient:
        return DeliveryClient.own_smtp(ALICE, alice_smtp(servers))

    suppression = SqliteSuppressionList(tmp_path / "suppressed.db")
    with Outbox.open(f"sqlite:///{tmp_path / 'outbox.db'}", resolve_client=resolve) as outbox:
        email = DocumentEmail(to=[BOB, GHOST], subject="Invoice 2026-18", body="Attached.")
        id = outbox.enqueue("alice", email)
        outbox.worker(concurrency=1).run(until_idle=True)
        assert outbox.status(id).state is State.SENT
        (raw,) = servers.wait_for_messages(ALICE)
        assert parse_bounce(raw) is not None  # Bob's copy went to his mailbox, Ghost's bounced

        handler = outbox.bounce_handler(suppression=suppression)
        settings = alice_imap(servers)
        first = BounceCollector(settings, index=outbox.sent_index(), on_event=handler).run()
        status = outbox.status(id)
        again = BounceCollector(settings, mark="$Again", on_event=handler).run()  # same report

        assert len(first.events) == len(again.events) == 1
        assert first.events[0].matched_by == "envelope_id"
        assert outbox.status(id) == status  # the second run changed nothing
        assert status.state is State.SENT and status.delivery == "bounced"
        assert set(status.bounces) == {GHOST}
        record = status.bounces[GHOST]
        assert (record.action, record.status, record.reason) == ("failed", "5.1.1", "user_unknown")
        assert status.summary == f"bounced: user unknown (5.1.1) {GHOST}"
        assert [m.id for m in outbox.messages(delivery="bounced")] == [id]
    assert set(suppression.lookup([BOB, GHOST])) == {GHOST}
