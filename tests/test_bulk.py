"""Connection pool and send_many: concurrency, streaming results, failures kept apart."""

from __future__ import annotations

import threading

import pytest

from mailbridge import DeliveryClient, DocumentEmail, RecipientsRefused, send_many
from mailbridge.smtp import ConnectionPool
from mailbridge.testing import FakeSmtpServer

from .conftest import PASSWORD, USER


def _emails(count: int, bad: set[int] = frozenset()) -> list[DocumentEmail]:  # type: ignore[assignment]
    return [
        DocumentEmail(
            to=f"{'gone' if n in bad else 'r'}{n}@example.test", subject=f"Invoice {n}", body="b"
        )
        for n in range(count)
    ]


def test_send_many_reports_every_message_and_keeps_failures_apart(
    smtp_server: FakeSmtpServer,
) -> None:
    for n in (3, 7):
        smtp_server.refuse_recipient(f"gone{n}@example.test")
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        outcomes = list(client.send_many(_emails(20, bad={3, 7}), concurrency=4))
    assert sorted(o.index for o in outcomes) == list(range(20))
    failed = {o.index: o.error for o in outcomes if not o.ok}
    assert set(failed) == {3, 7}
    assert all(isinstance(error, RecipientsRefused) for error in failed.values())
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert len(subjects) == 18 and "Invoice 3" not in subjects
    # results are attributed to the right message
    for outcome in outcomes:
        if outcome.ok:
            assert outcome.result.accepted == (f"r{outcome.index}@example.test",)  # type: ignore[union-attr]


def test_the_pool_bounds_connections_per_server(smtp_server: FakeSmtpServer) -> None:
    pool = ConnectionPool(max_per_server=2)
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        client.transport.pool = pool  # type: ignore[attr-defined]
        outcomes = list(client.send_many(_emails(30), concurrency=8))
    pool.close()
    assert all(o.ok for o in outcomes)
    assert smtp_server.connections <= 2


def test_clients_sharing_a_pool_share_connections(smtp_server: FakeSmtpServer) -> None:
    from mailbridge._addresses import parse_mailbox
    from mailbridge._identity import OwnIdentity
    from mailbridge.smtp import SmtpTransport

    pool = ConnectionPool(max_per_server=1)
    settings = smtp_server.smtp_settings()
    clients = [
        DeliveryClient(
            identity=OwnIdentity(parse_mailbox("s", USER)),
            transport=SmtpTransport(settings, pool=pool),
        )
        for _ in range(3)
    ]
    pairs = [(clients[n % 3], email) for n, email in enumerate(_emails(12))]
    assert all(o.ok for o in send_many(pairs, concurrency=6))
    pool.close()
    assert smtp_server.connections == 1
    assert len(smtp_server.messages) == 12


def test_send_many_streams_its_input(smtp_server: FakeSmtpServer) -> None:
    produced = []

    def lazily():  # type: ignore[no-untyped-def]
        for email in _emails(40):
            produced.append(email)
            yield email

    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        stream = client.send_many(lazily(), concurrency=2)
        next(stream)
        assert len(produced) < 40  # not read all at once
        rest = list(stream)
    assert len(rest) == 39


def test_messages_per_connection_cap_and_close(smtp_server: FakeSmtpServer) -> None:
    pool = ConnectionPool(max_per_server=1, max_messages_per_connection=5)
    from mailbridge.smtp import SmtpTransport

    transport = SmtpTransport(smtp_server.smtp_settings(), pool=pool)
    from mailbridge._addresses import parse_mailbox
    from mailbridge._identity import OwnIdentity

    client = DeliveryClient(identity=OwnIdentity(parse_mailbox("s", USER)), transport=transport)
    for email in _emails(12):
        client.send(email)
    assert smtp_server.connections == 3  # 5 + 5 + 2
    pool.close()
    with pytest.raises(Exception, match="closed"):
        client.send(_emails(1)[0])


def test_concurrent_sends_use_separate_connections(smtp_server: FakeSmtpServer) -> None:
    smtp_server.stall_seconds = 0.2
    barrier = threading.Barrier(3)
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:

        def send(n: int) -> None:
            barrier.wait(5)
            client.send(_emails(3)[n])

        threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 3
    assert PASSWORD  # the fixture's user logged in on every connection


def test_stopping_early_drops_sends_not_yet_started(smtp_server: FakeSmtpServer) -> None:
    smtp_server.stall_seconds = 0.1
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        stream = client.send_many(_emails(50), concurrency=2)
        next(stream)
        stream.close()  # the consumer gives up
    assert len(smtp_server.messages) <= 6  # at most what was already running or queued


def test_failing_input_still_reports_what_was_in_flight(smtp_server: FakeSmtpServer) -> None:
    def broken():  # type: ignore[no-untyped-def]
        yield from _emails(3)
        raise RuntimeError("the database went away")

    seen: list[int] = []

    def consume(client: DeliveryClient) -> None:
        seen.extend(outcome.index for outcome in client.send_many(broken(), concurrency=4))

    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(RuntimeError, match="database"):
            consume(client)
    assert sorted(seen) == [0, 1, 2]


def test_bad_arguments_name_the_field() -> None:
    from mailbridge import AsyncConnectionPool, ConfigurationError, ImapSettings
    from mailbridge.imap import SentArchiver

    for make, field in (
        (lambda: ConnectionPool(max_per_server=0), "max_per_server"),
        (lambda: ConnectionPool(messages_in_flight=0), "messages_in_flight"),
        (lambda: ConnectionPool(max_messages_per_connection=0), "max_messages_per_connection"),
        (lambda: ConnectionPool(idle_timeout=float("nan")), "idle_timeout"),
        (lambda: ConnectionPool(health_check_after=-1), "health_check_after"),
        (lambda: AsyncConnectionPool(idle_timeout=float("inf")), "idle_timeout"),
        (
            lambda: SentArchiver(ImapSettings("imap.example.test", 993, "ssl"), max_batch=0),
            "max_batch",
        ),
        (lambda: list(send_many([], concurrency=0)), "concurrency"),
    ):
        with pytest.raises(ConfigurationError) as info:
            make()
        assert info.value.field == field
