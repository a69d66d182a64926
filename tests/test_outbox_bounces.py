"""Bounces in the outbox: the envelope id survives the store, bounces are kept per recipient.

Runs on SQLite and, with the PostgreSQL test cluster, on PostgreSQL (`store_url`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.bounces import (
    BounceCollector,
    BounceEvent,
    BounceRecipient,
    BounceReport,
    Reason,
    parse_bounce,
)
from mailbridge.composer import PreparedMessage
from mailbridge.deliverability import SqliteSuppressionList
from mailbridge.outbox import Outbox, State, open_store
from mailbridge.outbox import _sql as sql_module
from mailbridge.outbox._schema import MIGRATIONS
from mailbridge.testing import FakeImapServer, FakeSmtpServer

from ._outbox_store_urls import STORES, store_url_for
from .test_bounce_collector import dsn

SENDER = "billing@acme.example"
JANE, BOB = "jane@customer.example", "bob@customer.example"
V1_DUMP = Path(__file__).parent / "outbox_v1.sql"


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request, tmp_path)


@pytest.fixture
def server() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(tls="none", dsn=True) as running:
        yield running


@pytest.fixture
def outbox(store_url: str, server: FakeSmtpServer) -> Iterator[Outbox]:
    def resolve(tenant: str) -> DeliveryClient:  # a new one each time: a worker closes its own
        return DeliveryClient.own_smtp(SENDER, server.smtp_settings())

    with Outbox.open(store_url, resolve_client=resolve) as opened:
        yield opened


def prepared(
    *to: str,
    envelope_id: str | None = None,
    mode: str = "own_smtp",
    sender: str = SENDER,
) -> PreparedMessage:
    message_id = f"<{uuid.uuid4().hex}@acme.example>"
    data = f"From: {SENDER}\r\nTo: {', '.join(to)}\r\nMessage-ID: {message_id}\r\n\r\nHi.\r\n"
    return PreparedMessage(
        data=data.encode(),
        envelope_sender=sender,
        recipients=to,
        message_id=message_id,
        mode=mode,
        envelope_id=envelope_id,
    )


def send(outbox: Outbox, message: PreparedMessage) -> str:
    id = outbox.enqueue("acme", message)
    outbox.worker(concurrency=1).run(until_idle=True)
    assert outbox.status(id).state is State.SENT
    return id


def mark_sent(outbox: Outbox, message: PreparedMessage) -> str:
    """Enqueue `message` and record it sent (a relay-mode message, without the relay)."""
    id = outbox.enqueue("app", message)
    assert outbox.store.claim_one(id, "test", lease=60, now=time.time()) is not None
    assert outbox.store.finish(id, "test", State.SENT, now=time.time())
    return id


def event(
    raw: bytes | None = None, *, report: BounceReport | None = None, **keys: str
) -> BounceEvent:
    """A collected bounce: `raw` parsed, or `report` as given (`verp_token` etc. in `keys`)."""
    if report is None:
        assert raw is not None
        report = parse_bounce(raw)
    assert report is not None
    return BounceEvent(
        report=report,
        message_id=None,
        envelope_id=None,
        matched_by=None,
        verp_token=keys.get("verp_token"),
        folder="INBOX",
        uidvalidity=1,
        uid=1,
    )


def heuristic(address: str, message_id: str | None = None) -> BounceReport:
    """What the parser makes of a bounce in no known format (anyone can write one)."""
    recipient = BounceRecipient(address, "failed", "5.1.1", Reason.USER_UNKNOWN, True)
    return BounceReport(
        "heuristic",
        (recipient,),
        "heuristic",
        original_message_id=message_id,
        failed_recipients=(address,),
    )


# -- the envelope id travels with the message ------------------------------------


def test_the_envelope_id_goes_from_enqueue_to_envid_on_mail(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    id = outbox.enqueue("acme", DocumentEmail(to=JANE, subject="Invoice", body="."))
    envelope_id = outbox.status(id).envelope_id
    assert envelope_id is not None and len(envelope_id) == 32

    outbox.worker(concurrency=1).run(until_idle=True)

    (received,) = server.messages
    assert f"ENVID={envelope_id}" in received.mail_options
    assert "RET=HDRS" in received.mail_options
    assert any(option.startswith("NOTIFY=") for option in received.rcpt_options)


def test_a_v1_schema_upgrades_in_place(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as v1:  # what the version 1 code created and wrote
        v1.setattr(sql_module, "MIGRATIONS", MIGRATIONS[:1])
        v1.setattr(sql_module, "SCHEMA_VERSION", 1)
        store = open_store(store_url)
        assert store.migrate() == 1
        assert isinstance(store, sql_module.SqlStore)
        with store._transaction() as cursor:
            store._run(
                cursor,
                "INSERT INTO outbox_messages (id, tenant, state, message_id, envelope_sender,"
                " recipients, bcc, smtputf8, mode, size, created_at, updated_at, not_before,"
                " deadline) VALUES ('old', 'acme', 'queued', '<old@acme.example>', ?, ?, '[]',"
                " 0, 'own_smtp', 3, 1, 1, 1, 4102444800)",
                (SENDER, f'["{JANE}"]'),
            )
            store._run(cursor, "INSERT INTO outbox_bodies (id, data) VALUES ('old', ?)", (b"Hi.",))
        store.close()

    store = open_store(store_url)
    try:
        assert store.schema_version() == 1
        assert store.migrate() == 4
        (claimed,) = store.claim("w", limit=5, lease=60, now=time.time())
        assert (claimed.id, claimed.data, claimed.envelope_id) == ("old", b"Hi.", None)
        row = store.get("old")
        assert row is not None and row.bounces == () and row.delivery is None
    finally:
        store.close()


def test_a_v1_database_file_made_by_the_v1_code_upgrades_in_place(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(V1_DUMP.read_text())
    connection.close()
    client = DeliveryClient.own_smtp(SENDER, server.smtp_settings())
    later = time.time() + 2 * 86_400  # the queued message waited an hour in 2026
    url = f"sqlite:///{path}"
    with client, Outbox.open(url, resolve_client=lambda t: client, clock=lambda: later) as outbox:
        assert outbox.store.schema_version() == 4
        sent, queued = sorted(outbox.messages(), key=lambda m: m.idempotency_key or "")
        assert sent.state is State.SENT and sent.summary.startswith("sent ")
        assert sent.envelope_id is None and sent.bounces == {}
        again = DocumentEmail(to=JANE, subject="Invoice 1", body=".")
        assert outbox.enqueue("acme", again, idempotency_key="invoice-1") == sent.id

        outbox.worker(concurrency=1).run(until_idle=True)

        assert outbox.status(queued.id).state is State.SENT
        (received,) = server.messages  # sent as before: no envelope id, so no ENVID
        assert not any(o.startswith("ENVID=") for o in received.mail_options)
        new = outbox.enqueue("acme", DocumentEmail(to=BOB, subject="New", body="."))
        assert outbox.status(new).envelope_id is not None


# -- bounces recorded per recipient ------------------------------------------------


def test_a_bounce_marks_its_recipient_once_and_a_ui_can_list_it(outbox: Outbox) -> None:
    id = send(outbox, prepared(JANE, BOB, envelope_id="env-full"))
    raw = dsn(JANE, envid="env-full", status="5.2.2").replace(b"no such user", b"mailbox full")
    bounce = event(raw)

    status = outbox.record_bounce(bounce)

    assert status is not None and status.id == id and status.state is State.SENT
    record = status.bounces[JANE]
    assert (record.action, record.status, record.reason, record.matched_by) == (
        "failed",
        "5.2.2",
        "mailbox_full",
        "envelope_id",
    )
    assert record.diagnostic.endswith("5.2.2 mailbox full")
    assert set(status.bounces) == {JANE}  # bob was not reported
    assert status.delivery == "bounced"
    assert status.summary == f"bounced: mailbox full (5.2.2) {JANE}"
    assert [m.id for m in outbox.messages(delivery="bounced")] == [id]
    assert outbox.messages(delivery="delayed") == []
    assert outbox.messages(state="sent", delivery="bounced")[0].id == id

    assert outbox.record_bounce(bounce) == status  # at-least-once: the same outcome
    late = event(dsn(JANE, envid="env-full", status="4.4.1", action="delayed"))
    assert outbox.record_bounce(late) == status  # a bounce is final


def test_a_delay_is_shown_as_delayed(outbox: Outbox) -> None:
    id = send(outbox, prepared(BOB, envelope_id="env-slow"))
    status = outbox.record_bounce(
        event(dsn(BOB, envid="env-slow", status="4.4.1", action="delayed"))
    )
    assert status is not None and status.delivery == "delayed"
    assert status.summary.startswith("delayed: ") and status.summary.endswith(f"(4.4.1) {BOB}")
    assert [m.id for m in outbox.messages(delivery="delayed")] == [id]

    status = outbox.record_bounce(event(dsn(BOB, envid="env-slow", status="5.1.1")))
    assert status is not None and status.delivery == "bounced"  # then it bounced after all
    assert status.summary == f"bounced: user unknown (5.1.1) {BOB}"


def test_the_message_is_found_by_envid_message_id_verp_then_recipient(outbox: Outbox) -> None:
    by_envid = send(outbox, prepared(JANE, envelope_id="env-a"))
    by_message_id = prepared(JANE)
    by_message_id_id = send(outbox, by_message_id)
    relay = prepared(JANE, mode="relay", sender="bounces+0123456789abcdef@app.example")
    relay_id = mark_sent(outbox, relay)
    newest = send(outbox, prepared(BOB))

    def found(bounce: BounceEvent) -> tuple[str | None, str | None]:
        status = outbox.record_bounce(bounce)
        if status is None:
            return None, None
        return status.id, status.bounces[next(iter(status.bounces))].matched_by

    assert found(event(dsn(JANE, envid="env-a"))) == (by_envid, "envelope_id")
    assert found(event(dsn(JANE, message_id=by_message_id.message_id))) == (
        by_message_id_id,
        "message_id",
    )
    assert found(event(dsn(JANE), verp_token="0123456789abcdef")) == (relay_id, "verp")
    assert found(event(dsn(BOB.upper()))) == (newest, "failed_recipients")
    assert found(event(dsn("nobody@customer.example"))) == (None, None)
    assert found(event(dsn(JANE, envid="someone-elses"))) == (relay_id, "failed_recipients")


def test_a_heuristic_report_counts_only_with_our_envid_or_verp(outbox: Outbox) -> None:
    message = prepared(JANE)
    id = send(outbox, message)
    relay = prepared(JANE, mode="relay", sender="bounces+feedfacefeedface@app.example")
    relay_id = mark_sent(outbox, relay)

    forged = outbox.record_bounce(event(report=heuristic(JANE, message.message_id)))
    assert forged is not None and forged.id == id
    assert forged.bounces == {} and forged.delivery is None  # Message-ID is no proof
    assert forged.summary.startswith("sent ")

    tied = outbox.record_bounce(event(report=heuristic(JANE), verp_token="feedfacefeedface"))
    assert tied is not None and tied.id == relay_id and tied.delivery == "bounced"
    assert tied.bounces[JANE].kind == "heuristic"


def test_only_the_messages_own_recipients_are_marked(outbox: Outbox) -> None:
    send(outbox, prepared(JANE, envelope_id="env-b"))
    status = outbox.record_bounce(event(dsn("stranger@other.example", envid="env-b")))
    assert status is not None and status.bounces == {} and status.delivery is None


def test_the_handler_suppresses_permanent_dsn_failures_only(outbox: Outbox, tmp_path: Path) -> None:
    suppression = SqliteSuppressionList(tmp_path / "suppressed.db")
    handle = outbox.bounce_handler(suppression=suppression)
    send(outbox, prepared(JANE, BOB, envelope_id="env-c"))
    relay = prepared(
        "carl@customer.example", mode="relay", sender="bounces+00000000000000aa@app.example"
    )
    mark_sent(outbox, relay)

    handle(event(dsn(JANE, envid="env-c", status="5.1.1")))
    handle(event(dsn(JANE, envid="env-c", status="5.1.1")))  # at least once
    handle(event(dsn(BOB, envid="env-c", status="4.2.2", action="delayed")))
    handle(event(report=heuristic("carl@customer.example"), verp_token="00000000000000aa"))
    send(outbox, prepared("dora@customer.example"))
    handle(event(dsn("dora@customer.example")))  # found by the address alone: anyone can

    found = suppression.lookup([JANE, BOB, "carl@customer.example", "dora@customer.example"])
    assert set(found) == {JANE}
    assert (found[JANE].reason, found[JANE].status) == ("user_unknown", "5.1.1")
    bounced = {m.recipients[0]: m for m in outbox.messages(delivery="bounced")}
    assert set(bounced) == {JANE, "carl@customer.example", "dora@customer.example"}
    assert bounced["carl@customer.example"].bounces["carl@customer.example"].kind == "heuristic"


def test_the_collector_feeds_the_outbox(outbox: Outbox) -> None:
    id = send(outbox, prepared(JANE, envelope_id="env-d"))
    with FakeImapServer(users={SENDER: "pw"}) as imap:
        imap.seed("INBOX", dsn(JANE, envid="env-d", status="5.1.1"))
        settings = imap.imap_settings()
        seen: list[BounceEvent] = []
        handler = outbox.bounce_handler()

        def on_event(bounce: BounceEvent) -> None:
            seen.append(bounce)
            handler(bounce)

        first = BounceCollector(settings, index=outbox.sent_index(), on_event=on_event).run()
        status = outbox.status(id)
        again = BounceCollector(settings, mark="$Again", on_event=on_event).run()
    assert len(first.events) == len(again.events) == 1
    assert (seen[0].message_id, seen[0].matched_by) == (outbox.status(id).message_id, "envelope_id")
    assert outbox.status(id) == status and status.delivery == "bounced"
    assert status.summary == f"bounced: user unknown (5.1.1) {JANE}"


def test_purge_takes_the_bounce_records_with_the_message(outbox: Outbox) -> None:
    send(outbox, prepared(JANE, envelope_id="env-f"))
    assert outbox.record_bounce(event(dsn(JANE, envid="env-f"))) is not None
    time.sleep(0.01)
    assert outbox.purge(older_than=dt.timedelta(0)) == 1
    store = outbox.store
    assert isinstance(store, sql_module.SqlStore)
    with store._transaction(write=False) as cursor:
        assert store._run(cursor, "SELECT COUNT(*) FROM outbox_bounces").fetchone()[0] == 0


# -- a DSN found by our envelope id settles an outcome_unknown message -------------


def unknown(outbox: Outbox, server: FakeSmtpServer, *to: str) -> str:
    """Send a message whose answer after DATA is lost (no IMAP): it ends outcome_unknown."""
    server.drop_before_data_reply = True
    id = outbox.enqueue("acme", DocumentEmail(to=list(to), subject="Invoice", body="."))
    outbox.worker(concurrency=1).run(until_idle=True)
    server.drop_before_data_reply = False
    assert outbox.status(id).state is State.OUTCOME_UNKNOWN
    return id


def envid(outbox: Outbox, id: str) -> str:
    found = outbox.status(id).envelope_id
    assert found is not None
    return found


def set_unknown(outbox: Outbox, message: PreparedMessage, tenant: str = "acme") -> str:
    """Enqueue `message` and record its outcome as unknown (as a worker would)."""
    id = outbox.enqueue(tenant, message)
    assert outbox.store.claim_one(id, "test", lease=60, now=time.time()) is not None
    assert outbox.store.finish(id, "test", State.OUTCOME_UNKNOWN, now=time.time())
    return id


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("failed", "5.1.1"),
        ("delayed", "4.4.1"),
        ("delivered", "2.0.0"),
        ("relayed", "2.0.0"),
        ("expanded", "2.0.0"),
    ],
)
def test_an_rfc3464_dsn_with_our_envid_settles_an_unknown_outcome_as_sent(
    outbox: Outbox, server: FakeSmtpServer, action: str, status: str
) -> None:
    id = unknown(outbox, server, JANE, BOB)
    before = outbox.status(id)
    assert server.messages == []  # the data went out, the answer was lost

    settled = outbox.record_bounce(
        event(dsn(JANE, envid=envid(outbox, id), status=status, action=action))
    )

    assert settled is not None and settled.state is State.SENT
    assert settled.settled_by == "dsn" and settled.error is None
    assert settled.sent_at == before.updated_at  # when the attempt ended, not the DSN's time
    assert outbox.counts() == {State.SENT: 1}
    assert [m.id for m in outbox.messages(state="sent")] == [id]
    assert outbox.messages(state="outcome_unknown") == []
    if action == "failed":  # the server took it, a later hop refused it
        assert settled.delivery == "bounced" and set(settled.bounces) == {JANE}
        assert settled.summary == f"bounced: user unknown (5.1.1) {JANE}"
        assert [m.id for m in outbox.messages(state="sent", delivery="bounced")] == [id]
    elif action == "delayed":
        assert settled.delivery == "delayed" and settled.summary.startswith("delayed: ")
    else:  # no news of a failure: what a sent message shows
        assert settled.bounces == {} and settled.delivery is None
        assert settled.summary == f"sent {before.updated_at:%H:%M} to {JANE} and 1 more"
    assert outbox.retry(id) is False and outbox.retry(id, force=True) is False  # final
    outbox.worker(concurrency=1).run(until_idle=True)
    assert server.messages == []  # never sent again
    assert outbox.record_bounce(event(dsn(JANE, envid=envid(outbox, id)))) is not None
    assert outbox.status(id).state is State.SENT  # a second DSN changes no state


def test_only_a_structured_dsn_found_by_our_envid_settles(outbox: Outbox) -> None:
    by_message_id = prepared(JANE, envelope_id="env-m")
    relay = prepared(JANE, mode="relay", sender="bounces+00000000000000bb@app.example")
    ids = {
        "message_id": set_unknown(outbox, by_message_id),
        "verp": set_unknown(outbox, relay, "app"),
        "heuristic": set_unknown(outbox, prepared(JANE, envelope_id="env-h")),
        "text": set_unknown(outbox, prepared(JANE, envelope_id="env-t")),
        "arf": set_unknown(outbox, prepared(JANE, envelope_id="env-a")),
    }
    failed = BounceRecipient(JANE, "failed", "5.1.1", Reason.USER_UNKNOWN, True)
    reports = [
        # the Message-ID is in every copy: a recipient can forge this DSN (no ENVID in it)
        event(dsn(JANE, message_id=by_message_id.message_id)),
        # a VERP tag is in the envelope sender of every copy the relay sent
        event(dsn(JANE), verp_token="00000000000000bb"),
        event(report=heuristic(JANE), verp_token="00000000000000bb"),
        # ours, were it read right; but a guess at an unknown format proves nothing
        event(report=attrs.evolve(heuristic(JANE), original_envelope_id="env-h")),
        event(report=BounceReport("dsn", (failed,), "exim", original_envelope_id="env-t")),
        event(report=BounceReport("arf", (failed,), "rfc5965", original_envelope_id="env-a")),
    ]
    for report in reports:
        assert outbox.record_bounce(report) is not None
    # the recipient alone finds only sent messages: an unknown one is not even found
    assert outbox.record_bounce(event(dsn(JANE, failed_header=True))) is None

    for key, id in ids.items():
        status = outbox.status(id)
        assert (key, status.state, status.settled_by) == (key, State.OUTCOME_UNKNOWN, None)
    assert outbox.status(ids["message_id"]).delivery == "bounced"  # the bounce is still kept
    assert outbox.status(ids["verp"]).delivery == "bounced"


@pytest.mark.parametrize(
    "state", [State.QUEUED, State.CLAIMED, State.FAILED, State.PARKED, State.CANCELLED]
)
def test_a_dsn_changes_the_state_of_no_message_that_is_not_outcome_unknown(
    outbox: Outbox, state: State
) -> None:
    id = outbox.enqueue("acme", prepared(JANE, envelope_id="env-s"))
    if state is State.CANCELLED:
        assert outbox.cancel(id)
    elif state is not State.QUEUED:
        assert outbox.store.claim_one(id, "test", lease=60, now=time.time()) is not None
        if state is not State.CLAIMED:
            assert outbox.store.finish(id, "test", state, now=time.time())

    status = outbox.record_bounce(event(dsn(JANE, envid="env-s", action="delayed")))

    assert status is not None and status.state is state and status.settled_by is None
    assert status.delivery == "delayed"


def test_retry_force_before_the_dsn_wins_and_the_message_is_sent_again(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    id = unknown(outbox, server, JANE)
    assert outbox.retry(id, force=True) is True

    status = outbox.record_bounce(event(dsn(JANE, envid=envid(outbox, id), action="delayed")))

    assert status is not None and status.state is State.QUEUED  # the person's call stands
    assert status.delivery == "delayed"  # what the DSN said is kept all the same
    outbox.worker(concurrency=1).run(until_idle=True)
    status = outbox.status(id)
    assert (status.state, status.settled_by, status.attempts) == (State.SENT, None, 2)
    (again,) = server.messages  # a second copy: the duplicate the person accepted by forcing
    assert f"ENVID={envid(outbox, id)}" in again.mail_options  # the same envelope id


def test_the_dsn_before_retry_force_wins_and_nothing_is_sent_again(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    id = unknown(outbox, server, JANE)
    assert outbox.record_bounce(event(dsn(JANE, envid=envid(outbox, id)))) is not None
    assert outbox.retry(id, force=True) is False
    outbox.worker(concurrency=1).run(until_idle=True)
    assert outbox.status(id).state is State.SENT and server.messages == []


def test_a_dsn_while_a_worker_holds_the_message_leaves_the_workers_outcome(
    outbox: Outbox,
) -> None:
    id = outbox.enqueue("acme", prepared(JANE, envelope_id="env-w"))
    assert outbox.store.claim_one(id, "worker", lease=60, now=time.time()) is not None
    bounce = event(dsn(JANE, envid="env-w"))

    status = outbox.record_bounce(bounce)  # while the worker searches the Sent folder

    assert status is not None and status.state is State.CLAIMED
    assert outbox.store.finish(id, "worker", State.OUTCOME_UNKNOWN, now=time.time())
    assert outbox.status(id).state is State.OUTCOME_UNKNOWN  # the worker came last
    again = outbox.record_bounce(bounce)  # the same DSN read again settles it
    assert again is not None and again.state is State.SENT and again.settled_by == "dsn"


def test_settling_and_the_bounce_records_are_one_transaction(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    id = set_unknown(outbox, prepared(JANE, envelope_id="env-x"))
    store = outbox.store
    assert isinstance(store, sql_module.SqlStore)
    run = store._run

    def failing(cursor: object, sql: str, params: Sequence[object] = ()) -> object:
        if sql.startswith("INSERT INTO outbox_bounces"):
            raise RuntimeError("the disk is full")
        return run(cursor, sql, params)

    monkeypatch.setattr(store, "_run", failing)
    with pytest.raises(RuntimeError):
        outbox.record_bounce(event(dsn(JANE, envid="env-x")))
    monkeypatch.undo()
    status = outbox.status(id)
    assert (status.state, status.bounces) == (State.OUTCOME_UNKNOWN, {})  # neither
    settled = outbox.record_bounce(event(dsn(JANE, envid="env-x")))
    assert settled is not None and settled.state is State.SENT and set(settled.bounces) == {JANE}


def test_retry_force_and_a_dsn_at_the_same_time_one_wins(store_url: str) -> None:
    """Two processes (two connections): an operator's retry(force=True) and the collector."""
    with Outbox.open(store_url) as operator, Outbox.open(store_url) as collector:
        for round in range(8):
            id = set_unknown(operator, prepared(JANE, envelope_id=f"env-r{round}"))
            bounce = event(dsn(JANE, envid=f"env-r{round}"))
            start = threading.Barrier(2, timeout=10)
            retried: list[bool] = []

            def retry(
                id: str = id, start: threading.Barrier = start, retried: list[bool] = retried
            ) -> None:
                start.wait()
                retried.append(operator.retry(id, force=True))

            thread = threading.Thread(target=retry)
            thread.start()
            start.wait()
            collector.record_bounce(bounce)
            thread.join(timeout=30)
            assert not thread.is_alive()
            status = operator.status(id)
            assert status.bounces.keys() == {JANE}  # kept whoever won
            if retried == [True]:  # the retry came first: queued, to be sent again
                assert (status.state, status.settled_by) == (State.QUEUED, None)
            else:  # the DSN came first: sent, and the retry found nothing to do
                assert retried == [False]
                assert (status.state, status.settled_by) == (State.SENT, "dsn")


def test_a_prepared_message_comes_back_from_the_store_field_for_field(outbox: Outbox) -> None:
    """`Envelope.fields_of` (enqueue) and `Envelope.prepared` (the worker) are inverses."""
    message = PreparedMessage(
        data="Subject: Rechnung für Jörg\r\n\r\nAnbei.\r\n".encode(),
        envelope_sender="bounces+00000000000000cc@app.example",
        recipients=("jörg@customer.example", BOB),
        message_id="<r-1@acme.example>",
        bcc=(BOB,),
        smtputf8=True,
        mode="relay",
        note="sent on behalf of Acme",
        envelope_id="env-round-trip",
    )
    assert all(
        getattr(message, field.name) != field.default for field in attrs.fields(PreparedMessage)
    )  # not one default: a field lost on the way would show
    id = outbox.enqueue("acme", message)
    claimed = outbox.store.claim_one(id, "test", lease=60, now=time.time())
    assert claimed is not None and claimed.prepared() == message


def test_a_dsn_settles_no_message_that_shares_its_envelope_id(outbox: Outbox) -> None:
    # an application's PreparedMessage (its envelope id) enqueued twice: once sent, then
    # again, for another tenant, with its outcome unknown. A DSN about the first copy
    # (a late "delayed") names the same ENVID: it proves nothing about the second.
    reused = prepared(JANE, envelope_id="env-twice")
    first = outbox.enqueue("acme", reused)
    assert outbox.store.claim_one(first, "test", lease=60, now=time.time()) is not None
    assert outbox.store.finish(first, "test", State.SENT, now=time.time())
    second = set_unknown(outbox, reused, "globex")

    assert outbox.record_bounce(event(dsn(JANE, envid="env-twice", action="delayed")))

    status = outbox.status(second)
    assert (status.state, status.settled_by) == (State.OUTCOME_UNKNOWN, None)
    alone = set_unknown(outbox, prepared(JANE, envelope_id="env-once"))
    settled = outbox.record_bounce(event(dsn(JANE, envid="env-once", action="delayed")))
    assert settled is not None and settled.id == alone and settled.state is State.SENT
