"""The outbox API and its worker against FakeSmtpServer: states, statuses, faults, bad input."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailbridge import (
    Attachment,
    DeliveryClient,
    DocumentEmail,
    HeaderInjection,
    InvalidAddress,
    MessageError,
    MessageFormatError,
    MissingPlaceholder,
    OutboxError,
    PoolClosed,
    PreparedMessage,
)
from mailbridge.diagnosis import Category
from mailbridge.errors import ConfigurationError
from mailbridge.outbox import Backoff, Outbox, State
from mailbridge.providers import ProviderRegistry
from mailbridge.testing import FakeImapServer, FakeSmtpServer

FAST = Backoff(first=0.05, factor=1.0, maximum=0.05, jitter=0.0)
TENANT = "acme"


def invoice(number: int = 1, to: str = "jane@customer.example") -> DocumentEmail:
    return DocumentEmail(to=to, subject=f"Invoice {number}", body="Please find it attached.")


@pytest.fixture
def server() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(tls="none") as running:
        yield running


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


def client_for(server: FakeSmtpServer, sender: str = "billing@acme.example") -> DeliveryClient:
    return DeliveryClient.own_smtp(sender, server.smtp_settings())


@pytest.fixture
def outbox(url: str, server: FakeSmtpServer) -> Iterator[Outbox]:
    with Outbox.open(url, resolve_client=lambda tenant: client_for(server)) as opened:
        yield opened


def drain(outbox: Outbox, resolve: Callable[[str], DeliveryClient] | None = None) -> None:
    outbox.worker(resolve, backoff=FAST, concurrency=4).run(until_idle=True, linger=0.5)


def test_a_queued_message_is_sent_once_and_its_status_says_so(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    id = outbox.enqueue(TENANT, invoice())
    queued = outbox.status(id)
    assert (queued.state, queued.summary, queued.attempts) == (State.QUEUED, "queued", 0)
    drain(outbox)
    drain(outbox)
    status = outbox.status(id)
    assert server.delivered_count == 1
    assert status.state is State.SENT
    assert status.accepted == ("jane@customer.example",)
    assert status.reply is not None and status.reply.code == 250
    assert status.sent_at is not None
    assert status.summary == f"sent {status.sent_at:%H:%M} to jane@customer.example"
    assert server.messages[0].message["Message-ID"] == status.message_id


def test_the_stored_bytes_are_what_the_server_gets(url: str, server: FakeSmtpServer) -> None:
    client = client_for(server)
    prepared = client.prepare(invoice())
    with Outbox.open(url) as outbox:
        id = outbox.enqueue(TENANT, prepared)
        drain(outbox, lambda tenant: client_for(server))
        assert outbox.status(id).state is State.SENT
    assert server.messages[0].data == prepared.data


def test_an_idempotency_key_stores_and_sends_once(outbox: Outbox, server: FakeSmtpServer) -> None:
    first = outbox.enqueue(TENANT, invoice(), idempotency_key="invoice-7")
    again = outbox.enqueue(TENANT, invoice(), idempotency_key="invoice-7")
    assert again == first
    drain(outbox)
    assert server.delivered_count == 1
    assert outbox.counts() == {State.SENT: 1}


def test_dispatch_runs_after_commit_and_again_only_while_queued(outbox: Outbox) -> None:
    seen: list[tuple[str, State | None]] = []

    def dispatch(id: str) -> None:
        seen.append((id, outbox.status(id).state))  # the row is committed and visible

    id = outbox.enqueue(TENANT, invoice(), idempotency_key="k", dispatch=dispatch)
    outbox.enqueue(TENANT, invoice(), idempotency_key="k", dispatch=dispatch)
    drain(outbox)
    outbox.enqueue(TENANT, invoice(), idempotency_key="k", dispatch=dispatch)
    assert seen == [(id, State.QUEUED), (id, State.QUEUED)]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: invoice(to="jane@@customer.example"), InvalidAddress),
        (lambda: invoice(to="jane@customer.example\r\nBcc: all@x.example"), MessageError),
        (
            lambda: DocumentEmail(to="a@b.example", subject="Hi\r\nBcc: x@y.example", body="."),
            HeaderInjection,
        ),
        (
            lambda: DocumentEmail(to="a@b.example", subject="Invoice {number}", body="."),
            MissingPlaceholder,
        ),
    ],
    ids=["invalid-address", "injected-recipient", "header-injection", "unknown-placeholder"],
)
def test_bad_input_fails_in_the_caller_and_stores_nothing(
    outbox: Outbox, make: Callable[[], DocumentEmail], error: type[Exception]
) -> None:
    with pytest.raises(error):
        outbox.enqueue(TENANT, make())
    assert outbox.counts() == {}


def test_an_oversized_message_is_refused_at_enqueue(url: str, server: FakeSmtpServer) -> None:
    big = Attachment("scan.pdf", b"%PDF-1.4\n" + b"x" * 300_000)
    with Outbox.open(url, max_message_size=200_000) as outbox:
        email = DocumentEmail(to="a@b.example", subject="Scan", body=".", attachments=[big])
        with pytest.raises(MessageError, match=r"at most 0\.2 MiB"):
            outbox.enqueue(TENANT, email, client=client_for(server))
        assert outbox.counts() == {}


def test_untransmittable_prepared_bytes_and_bad_arguments_are_refused(outbox: Outbox) -> None:
    bare_lf = PreparedMessage(b"Subject: x\n\nbody\n", "a@b.example", ("c@d.example",), "<x@y>")
    with pytest.raises(MessageFormatError):
        outbox.enqueue(TENANT, bare_lf)
    with pytest.raises(ConfigurationError, match="tenant"):
        outbox.enqueue("", invoice())
    with pytest.raises(ConfigurationError, match="idempotency_key"):
        outbox.enqueue(TENANT, invoice(), idempotency_key="")
    with pytest.raises(TypeError):
        outbox.enqueue(TENANT, "not an email")  # type: ignore[arg-type]
    assert outbox.counts() == {}


def test_without_a_client_a_document_email_cannot_be_composed(url: str) -> None:
    with Outbox.open(url) as outbox, pytest.raises(ConfigurationError, match="client"):
        outbox.enqueue(TENANT, invoice())


def test_a_permanent_refusal_fails_at_once_with_the_servers_reply(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    server.refuse_recipient("gone@customer.example", "550 5.1.1 Mailbox unavailable")
    id = outbox.enqueue(TENANT, invoice(to="gone@customer.example"))
    drain(outbox)
    status = outbox.status(id)
    assert (status.state, status.attempts) == (State.FAILED, 1)
    assert status.error is not None and status.error.type == "RecipientsRefused"
    assert status.error.diagnosis is not None
    assert status.error.diagnosis.category is Category.RECIPIENT_REFUSED
    assert status.summary == "refused: Mailbox unavailable"


def test_one_refused_recipient_is_reported_while_the_others_get_it(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    server.refuse_recipient("gone@customer.example", "550 5.1.1 Mailbox unavailable")
    id = outbox.enqueue(TENANT, invoice(to="jane@customer.example, gone@customer.example"))
    drain(outbox)
    status = outbox.status(id)
    assert status.state is State.SENT
    assert list(status.refused) == ["gone@customer.example"]
    assert status.summary.endswith("; refused by gone@customer.example: Mailbox unavailable")


def test_a_temporary_refusal_backs_off_and_is_sent_later(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    server.refuse_recipient("jane@customer.example", "451 4.3.0 Try again later")
    id = outbox.enqueue(TENANT, invoice())
    outbox.worker(backoff=Backoff(first=60)).run(until_idle=True)
    waiting = outbox.status(id)
    assert (waiting.state, waiting.attempts) == (State.QUEUED, 1)
    assert waiting.summary.startswith("retrying at ")
    assert "451 4.3.0 Try again later" in waiting.summary
    assert waiting.not_before > waiting.updated_at + dt.timedelta(seconds=29)
    assert waiting.error is not None and waiting.error.temporary
    server.refused_recipients.clear()
    assert outbox.retry(id) is False  # queued: nothing to retry; backoff decides
    drain(outbox)  # not due yet
    assert outbox.status(id).state is State.QUEUED


def test_temporary_failures_stop_at_the_deadline(url: str, server: FakeSmtpServer) -> None:
    server.refuse_recipient("jane@customer.example", "451 4.3.0 Try again later")
    with Outbox.open(url, resolve_client=lambda tenant: client_for(server)) as outbox:
        id = outbox.enqueue(TENANT, invoice(), deadline=dt.timedelta(seconds=0.3))
        for _ in range(20):
            drain(outbox)
            if outbox.status(id).state is not State.QUEUED:
                break
        status = outbox.status(id)
    assert status.state is State.FAILED
    assert status.attempts >= 2
    assert status.error is not None and "gave up after" in status.error.message


def test_a_421_mid_batch_loses_and_duplicates_nothing(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    server.messages_per_connection = 3  # 421 and close, as Exim's per-connection limit
    ids = [outbox.enqueue(TENANT, invoice(n)) for n in range(20)]
    drain(outbox)
    assert outbox.counts() == {State.SENT: 20}
    received = [m.message["Message-ID"] for m in server.messages]
    assert sorted(received) == sorted(outbox.status(id).message_id for id in ids)


def test_a_tenant_with_a_wrong_password_fails_with_the_diagnosis_and_others_flow(
    url: str,
) -> None:
    with FakeSmtpServer(users={"billing@acme.example": "right"}) as server:
        settings = {
            "acme": server.smtp_settings(),
            "globex": server.smtp_settings(password="wrong"),
        }

        def resolve(tenant: str) -> DeliveryClient:
            return DeliveryClient.own_smtp("billing@acme.example", settings[tenant])

        with Outbox.open(url, resolve_client=resolve) as outbox:
            good = [outbox.enqueue("acme", invoice(n)) for n in range(5)]
            bad = [outbox.enqueue("globex", invoice(n)) for n in range(3)]
            drain(outbox)
            assert {outbox.status(id).state for id in good} == {State.SENT}
            failed = [outbox.status(id) for id in bad]
        assert server.delivered_count == 5
    assert {status.state for status in failed} == {State.FAILED}
    error = failed[0].error
    assert error is not None and error.diagnosis is not None
    assert error.diagnosis.category is Category.AUTH_FAILED
    assert "wrong" not in repr(failed) and "right" not in repr(failed)


def test_a_tenant_getting_4xx_does_not_hold_up_the_others(url: str) -> None:
    with FakeSmtpServer(tls="none") as slow, FakeSmtpServer(tls="none") as fine:
        slow.sender_reply = "451 4.7.1 Greylisted, try again later"
        servers = {"acme": slow, "globex": fine}
        with Outbox.open(url, resolve_client=lambda t: client_for(servers[t])) as outbox:
            held = [outbox.enqueue("acme", invoice(n)) for n in range(10)]
            flowing = [outbox.enqueue("globex", invoice(n)) for n in range(10)]
            outbox.worker(backoff=Backoff(first=60), concurrency=4).run(until_idle=True)
            assert {outbox.status(id).state for id in flowing} == {State.SENT}
            assert {outbox.status(id).state for id in held} == {State.QUEUED}
        assert fine.delivered_count == 10


def test_a_failing_resolver_parks_the_message_and_the_worker_goes_on(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    def resolve(tenant: str) -> DeliveryClient:
        if tenant == "deleted":
            raise KeyError(tenant)
        return client_for(server)

    parked = outbox.enqueue("deleted", invoice(), client=client_for(server))
    sent = outbox.enqueue(TENANT, invoice())
    drain(outbox, resolve)
    status = outbox.status(parked)
    assert status.state is State.PARKED
    assert status.summary.startswith("parked: resolve_client failed for this tenant: KeyError")
    assert status.error is not None
    diagnosis = status.error.diagnosis
    assert diagnosis is not None
    assert diagnosis.category is Category.CLIENT_UNAVAILABLE
    assert diagnosis.summary == (
        "The application could not build this tenant's mail client: KeyError."
    )
    assert diagnosis.hints  # what to do, for the application's operator
    assert outbox.status(sent).state is State.SENT
    assert outbox.retry(parked)
    drain(outbox)
    assert outbox.status(parked).state is State.SENT


def test_a_lost_answer_after_data_is_outcome_unknown_and_never_resent(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    server.drop_before_data_reply = True
    id = outbox.enqueue(TENANT, invoice())
    drain(outbox)
    server.drop_before_data_reply = False
    drain(outbox)
    status = outbox.status(id)
    assert status.state is State.OUTCOME_UNKNOWN
    assert status.summary == (
        "outcome unknown: the connection was lost after the message was sent;"
        " check before sending again"
    )
    assert status.error is not None and status.error.diagnosis is not None
    assert status.error.diagnosis.category is Category.OUTCOME_UNKNOWN
    assert outbox.retry(id) is False
    assert outbox.retry(id, force=True) is True
    drain(outbox)
    assert outbox.status(id).state is State.SENT


def test_the_sent_folder_settles_an_unknown_outcome(url: str, server: FakeSmtpServer) -> None:
    with FakeImapServer(users={"billing@acme.example": "pw"}) as imap:

        def resolve(tenant: str, *, files_own_copy: bool = False) -> DeliveryClient:
            return DeliveryClient.own_smtp(
                "billing@acme.example",
                server.smtp_settings(),
                imap=imap.imap_settings(),
                archive_sent=not files_own_copy,
            )

        with Outbox.open(url, resolve_client=resolve) as outbox:
            server.drop_before_data_reply = True
            found = outbox.enqueue(TENANT, invoice(1))
            missing = outbox.enqueue(TENANT, invoice(2))
            self_filed = outbox.enqueue("gmail-like", invoice(3))
            copy = f"Message-ID: {outbox.status(found).message_id}\r\nSubject: x\r\n\r\nx\r\n"
            imap.seed("Sent", copy.encode())

            def resolver(tenant: str) -> DeliveryClient:
                return resolve(tenant, files_own_copy=tenant == "gmail-like")

            outbox.worker(resolver, backoff=Backoff(first=60)).run(until_idle=True)
            assert outbox.status(found).state is State.SENT  # its copy is in Sent
            assert outbox.status(found).settled_by == "sent_folder"
            assert outbox.status(missing).state is State.OUTCOME_UNKNOWN  # we archive: no proof
            requeued = outbox.status(self_filed)  # the server files its own copy: none, not sent
            assert (requeued.state, requeued.attempts) == (State.QUEUED, 1)
            assert "not in the Sent folder" in requeued.summary
        server.drop_before_data_reply = False
        with Outbox.open(url, clock=lambda: time.time() + 120) as later:
            drain(later, resolver)
            assert later.status(self_filed).state is State.SENT
        assert server.delivered_count == 1
        assert len(imap.messages("Sent")) == 1  # the found copy only: gmail-like files its own


def test_deliver_sends_once_however_often_it_runs(outbox: Outbox, server: FakeSmtpServer) -> None:
    id = outbox.enqueue(TENANT, invoice())
    threads = [threading.Thread(target=outbox.deliver, args=(id,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outbox.deliver(id).state is State.SENT
    assert server.delivered_count == 1


def test_deliver_leaves_a_message_that_is_not_due(outbox: Outbox, server: FakeSmtpServer) -> None:
    id = outbox.enqueue(TENANT, invoice(), not_before=dt.timedelta(minutes=5))
    status = outbox.deliver(id)
    assert status.state is State.QUEUED
    assert status.not_before > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4)
    assert server.delivered_count == 0


def test_cancel_purge_and_unknown_ids(outbox: Outbox) -> None:
    kept = outbox.enqueue(TENANT, invoice(1))
    withdrawn = outbox.enqueue(TENANT, invoice(2), not_before=dt.timedelta(hours=1))
    assert outbox.cancel(withdrawn)
    drain(outbox)
    assert not outbox.cancel(kept)  # already sent
    assert [s.id for s in outbox.messages(state="cancelled")] == [withdrawn]
    assert outbox.status(withdrawn).summary == "cancelled"
    assert outbox.purge(older_than=dt.timedelta(hours=1)) == 0
    assert outbox.purge(older_than=dt.timedelta(0)) == 2
    with pytest.raises(OutboxError, match="no message"):
        outbox.status(kept)
    with pytest.raises(OutboxError):
        outbox.retry("nope")


PACED = """
[[provider]]
id = "pacedmail"
name = "Paced Mail"
smtp = [{ host = "127.0.0.1", port = 465, security = "implicit_tls" }]
limits = { per_minute = 3, connections = 2, source = "a test" }
"""


def test_provider_limits_hold_messages_back_with_a_reason(url: str, server: FakeSmtpServer) -> None:
    registry = ProviderRegistry.from_toml(PACED)
    resolve = lambda tenant: client_for(server)  # noqa: E731
    with Outbox.open(url, resolve_client=resolve, registry=registry) as outbox:
        ids = [outbox.enqueue(TENANT, invoice(n)) for n in range(5)]
        other = outbox.enqueue("globex", invoice(9), client=client_for(server))
        drain(outbox)
        states = [outbox.status(id) for id in ids]
        assert [s.state for s in states].count(State.SENT) == 3
        waiting = [s for s in states if s.state is State.QUEUED]
        assert {s.summary for s in waiting} == {"waiting: Paced Mail per-minute limit"}
        assert outbox.status(other).state is State.SENT  # another tenant is not held


def test_the_built_in_registry_knows_the_big_providers_limits() -> None:
    registry = ProviderRegistry.default()
    microsoft = registry.by_id("microsoft365")
    gmail = registry.by_id("gmail")
    assert microsoft is not None and microsoft.limits is not None
    assert (microsoft.limits.per_minute, microsoft.limits.connections) == (30, 3)
    assert gmail is not None and gmail.limits is not None and gmail.limits.per_day == 500
    assert all(p.limits.source for p in registry if p.limits is not None)


def test_a_slow_send_keeps_its_lease_so_no_other_worker_takes_it_over(
    outbox: Outbox, server: FakeSmtpServer
) -> None:
    server.stall_seconds = 0.6  # every MAIL FROM waits longer than two leases
    ids = [outbox.enqueue(TENANT, invoice(n)) for n in range(2)]
    slow = outbox.worker(lease=0.25, concurrency=2)
    thread = threading.Thread(target=slow.run, kwargs={"until_idle": True})
    thread.start()
    time.sleep(0.3)
    rival = outbox.worker(lease=0.25, concurrency=2).run(until_idle=True, linger=1.0)
    thread.join(30)
    assert rival.total == 0  # the leases were renewed while the messages were in flight
    assert {outbox.status(id).state for id in ids} == {State.SENT}
    assert server.delivered_count == 2


def test_backoff_grows_to_its_maximum_with_jitter_below_it() -> None:
    backoff = Backoff(first=10, factor=3, maximum=100, jitter=0.5)
    for attempts, base in ((1, 10), (2, 30), (3, 90), (4, 100), (9, 100)):
        delays = [backoff.delay(attempts) for _ in range(50)]
        assert all(base / 2 <= delay <= base for delay in delays)
        assert len(set(delays)) > 1
    assert Backoff(first=5, jitter=0).delay(1) == 5
    with pytest.raises(ConfigurationError, match="first"):
        Backoff(first=0)


def test_an_outbox_refuses_a_schema_it_was_not_allowed_to_create(url: str) -> None:
    with pytest.raises(OutboxError, match="mailbridge outbox migrate"):
        Outbox.open(url, migrate=False)
    Outbox.open(url).close()
    Outbox.open(url, migrate=False).close()


def test_an_applications_exception_text_is_never_stored(
    outbox: Outbox, server: FakeSmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    def resolve(tenant: str) -> DeliveryClient:
        raise RuntimeError("cannot reach vault with token s3cr3t-T0KEN")

    id = outbox.enqueue("acme", invoice(), client=client_for(server))
    drain(outbox, resolve)
    status = outbox.status(id)
    assert status.state is State.PARKED
    assert status.summary == "parked: resolve_client failed for this tenant: RuntimeError"
    assert "s3cr3t" not in repr(status) and "s3cr3t" not in caplog.text


def test_the_worker_never_closes_the_applications_clients(url: str, server: FakeSmtpServer) -> None:
    """A resolver that caches one client per tenant (as Django's pool does) keeps working."""
    client = client_for(server)
    with Outbox.open(url, resolve_client=lambda tenant: client) as outbox:
        first = outbox.enqueue(TENANT, invoice(1))
        drain(outbox)
        second = outbox.enqueue(TENANT, invoice(2))
        drain(outbox)  # the second run gets the same client from the resolver
        states = [outbox.status(id).state for id in (first, second)]
    assert not client.closed
    client.close()
    assert states == [State.SENT, State.SENT] and server.delivered_count == 2


def test_a_client_closed_by_the_application_is_resolved_again(
    url: str, server: FakeSmtpServer
) -> None:
    clients: list[DeliveryClient] = []

    def resolve(tenant: str) -> DeliveryClient:
        if not clients or clients[-1].closed:  # the application replaced the closed one
            clients.append(client_for(server))
        return clients[-1]

    with Outbox.open(url, resolve_client=resolve) as outbox:
        worker = outbox.worker(resolve, backoff=FAST, concurrency=2)
        first = outbox.enqueue(TENANT, invoice(1))

        def close_after_the_first(claimed: object, state: State) -> None:
            if state is State.SENT and len(clients) == 1:
                clients[0].close()
                outbox.enqueue(TENANT, invoice(2))

        worker.on_outcome = close_after_the_first
        worker.run(until_idle=True, linger=0.5)
        states = {outbox.status(id).state for id in (first,)}
        every = [status.state for status in outbox.messages()]
    clients[-1].close()
    assert states == {State.SENT} and every == [State.SENT, State.SENT]
    assert len(clients) == 2 and server.delivered_count == 2


def test_a_resolver_returning_a_closed_client_parks_the_message_saying_so(
    url: str, server: FakeSmtpServer
) -> None:
    closed = client_for(server)
    closed.close()
    with Outbox.open(url, resolve_client=lambda tenant: closed) as outbox:
        id = outbox.enqueue(TENANT, invoice(), client=client_for(server))
        drain(outbox)
        status = outbox.status(id)
    assert status.state is State.PARKED and server.delivered_count == 0
    assert status.error is not None and "closed DeliveryClient" in status.error.message


def test_a_client_closed_between_resolving_and_sending_queues_the_message_again(
    url: str, server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(server)
    deliver = client.transport.deliver
    calls: list[int] = []

    def closed_once(prepared: PreparedMessage) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise PoolClosed("the connection pool is closed")
        return deliver(prepared)

    monkeypatch.setattr(client.transport, "deliver", closed_once)
    with Outbox.open(url, resolve_client=lambda tenant: client) as outbox:
        id = outbox.enqueue(TENANT, invoice())
        drain(outbox)
        status = outbox.status(id)
    client.close()
    assert status.state is State.SENT and status.attempts == 1 and len(calls) == 2
    assert server.delivered_count == 1
