"""`AsyncDeliveryClient`: the sync client's key scenarios on asyncio, with the fakes and Postfix."""

from __future__ import annotations

import asyncio
import collections
import email
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from mailbridge import (
    AsyncConnectionPool,
    AsyncDeliveryClient,
    Attachment,
    AuthenticationError,
    BulkOutcome,
    Category,
    ConfigurationError,
    ConnectError,
    ConnectionReport,
    DeliveryClient,
    DocumentEmail,
    MailbridgeError,
    RecipientsRefused,
    Security,
    SmtpSettings,
    TlsError,
)
from mailbridge.smtp import probe_smtp_async
from mailbridge.smtp.transport import MAX_CONNECTIONS_TRIED
from mailbridge.testing import FakeImapServer, FakeSmtpServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import INVOICE_PDF, PASSWORD, USER, alice_smtp
from .test_message_pipelining import HoldingServer, _check_attribution, _message
from .test_starttls_injection import ScriptedServer

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


def _emails(count: int, tag: str) -> list[DocumentEmail]:
    return [
        DocumentEmail(to=f"r{n}@example.test", subject=f"{tag} {n}", body="b") for n in range(count)
    ]


async def _all(outcomes: AsyncIterator[BulkOutcome]) -> list[BulkOutcome]:
    return [outcome async for outcome in outcomes]


def test_send_and_refused_recipients(smtp_server: FakeSmtpServer) -> None:
    smtp_server.refuse_recipient("gone@customer.example")
    smtp_server.refuse_recipient("also-gone@customer.example")

    async def scenario() -> None:
        async with AsyncDeliveryClient.own_smtp(
            USER, smtp_server.smtp_settings(), display_name="Acme"
        ) as client:
            email = DocumentEmail(
                to=["jane@customer.example", "gone@customer.example"],
                subject="Invoice",
                body="see attachment",
                attachments=[Attachment("invoice.pdf", INVOICE_PDF)],
            )
            preview = await client.preview(email)
            assert b"From: Acme <tenant@example.test>" in preview
            result = await client.send(email)
            assert result.accepted == ("jane@customer.example",)
            assert result.refused["gone@customer.example"].code == 550
            assert not result.ok and result.archived is None
            with pytest.raises(RecipientsRefused):
                await client.send(
                    DocumentEmail(to="also-gone@customer.example", subject="s", body="b")
                )
        with pytest.raises(MailbridgeError, match="closed"):
            await client.send(DocumentEmail(to="jane@customer.example", subject="s", body="b"))

    run(scenario)
    (message,) = smtp_server.messages
    assert message.rcpt_tos == ("jane@customer.example",)
    assert message.tls and message.user == USER
    assert message.message["Subject"] == "Invoice"


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_a_per_connection_limit_loses_nothing_and_sends_nothing_twice(chunking: bool) -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, chunking=chunking) as server:
        server.messages_per_connection = 10

        async def scenario() -> list[BulkOutcome]:
            async with AsyncDeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
                return await _all(client.send_many(_emails(50, "limit")))

        outcomes = run(scenario)
        assert [o.error for o in outcomes if not o.ok] == []
        subjects = collections.Counter(str(m.message["Subject"]) for m in server.messages)
        assert subjects == collections.Counter(f"limit {n}" for n in range(50))
        assert server.connections >= 5


def test_a_server_that_keeps_refusing_gives_a_typed_temporary_error() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        server.messages_per_connection = 0  # every MAIL: 421 and close

        async def scenario() -> None:
            async with AsyncDeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
                await client.send(_emails(1, "never")[0])

        with pytest.raises(ConnectError) as info:
            run(scenario)
        assert server.connections == MAX_CONNECTIONS_TRIED
    assert info.value.temporary and "on 4 connections" in str(info.value)
    assert server.messages == []


def test_replies_injected_before_the_starttls_handshake_are_discarded() -> None:
    with ScriptedServer() as scripted:
        context = ssl.create_default_context()
        scripted.ca.configure_trust(context)
        settings = SmtpSettings(
            "127.0.0.1", scripted.port, "starttls", ssl_context=context, command_timeout=5
        )

        async def scenario() -> str:
            async with AsyncDeliveryClient.own_smtp("billing@acme.example", settings) as client:
                result = await client.send(
                    DocumentEmail(to="jane@customer.example", subject="s", body="b")
                )
            return result.reply.text

        assert run(scenario) == "queued"
    assert scripted.seen_after_tls[0].startswith("EHLO")


def test_a_failed_login_says_quit(smtp_server: FakeSmtpServer) -> None:
    settings = smtp_server.smtp_settings(password="wrong-one")

    async def scenario() -> None:
        async with AsyncDeliveryClient.own_smtp(USER, settings) as client:
            await client.send(_emails(1, "x")[0])

    with pytest.raises(AuthenticationError) as info:
        run(scenario)
    assert info.value.reply is not None and info.value.reply.code == 535
    assert "wrong-one" not in str(info.value) and "wrong-one" not in repr(info.value)
    assert smtp_server.quits == 1
    assert smtp_server.messages == []


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_messages_of_many_tasks_are_pipelined_on_one_connection(chunking: bool) -> None:
    count = 12
    with HoldingServer(chunking=chunking) as server:

        async def scenario() -> list[BulkOutcome]:
            pool = AsyncConnectionPool(max_per_server=1, messages_in_flight=4)
            async with AsyncDeliveryClient.own_smtp(
                "billing@example.test", server.settings(), pool=pool
            ) as client:
                outcomes = await _all(client.send_many([_message(n) for n in range(count)]))
            await pool.aclose()
            return outcomes

        outcomes = run(scenario)
    _check_attribution(outcomes, count, server.received)
    assert sorted(server.deliveries) == sorted(set(server.deliveries))
    assert server.connections == 1
    delivered = len(server.ahead)
    # every final reply but the last found the next transaction already waiting
    assert server.ahead[:-1] == [True] * (delivered - 1)


def test_a_stale_idle_connection_is_checked_and_replaced(smtp_server: FakeSmtpServer) -> None:
    async def scenario() -> None:
        pool = AsyncConnectionPool(health_check_after=0.0)
        async with AsyncDeliveryClient.own_smtp(
            USER, smtp_server.smtp_settings(), pool=pool
        ) as client:
            await client.send(_emails(1, "first")[0])
            smtp_server.drop_connections()  # an idle time-out on the server's side
            await asyncio.sleep(0.05)
            await client.send(_emails(1, "second")[0])
        await pool.aclose()

    run(scenario)
    assert [str(m.message["Subject"]) for m in smtp_server.messages] == ["first 0", "second 0"]
    assert smtp_server.connections == 2


def test_a_connection_is_replaced_after_max_messages_per_connection(
    smtp_server: FakeSmtpServer,
) -> None:
    async def scenario() -> None:
        pool = AsyncConnectionPool(max_messages_per_connection=2)
        async with AsyncDeliveryClient.own_smtp(
            USER, smtp_server.smtp_settings(), pool=pool
        ) as client:
            for email in _emails(5, "rotated"):
                await client.send(email)
        await pool.aclose()

    run(scenario)
    assert len(smtp_server.messages) == 5
    assert smtp_server.connections == 3  # 2 + 2 + 1
    assert smtp_server.quits == 3  # each one ended politely


def test_implicit_tls_and_the_probe_that_finds_the_right_mode() -> None:
    with FakeSmtpServer(tls="implicit", users={USER: PASSWORD}) as server:

        async def scenario() -> tuple[ConnectionReport, ConnectionReport]:
            async with AsyncDeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
                await client.send(_emails(1, "implicit")[0])
            wrong = server.smtp_settings(security=Security.STARTTLS, command_timeout=1.0)
            mixed_up = await probe_smtp_async(wrong)
            good = await probe_smtp_async(server.smtp_settings())
            return mixed_up, good

        mixed_up, good = run(scenario)
        assert server.messages[0].tls
    assert good.ok and [s.name for s in good.steps][2] == "tls"
    assert mixed_up.diagnosis is not None
    assert mixed_up.diagnosis.category == Category.EXPECTED_IMPLICIT_TLS
    assert mixed_up.alternative is not None
    assert mixed_up.alternative.security is Security.IMPLICIT_TLS
    assert "worked" in mixed_up.diagnosis.hints[0]


def test_a_certificate_for_another_host_is_refused() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, certificate_hostnames=["mail.other.example"]) as s:

        async def scenario() -> None:
            async with AsyncDeliveryClient.own_smtp(USER, s.smtp_settings()) as client:
                await client.send(_emails(1, "never")[0])

        with pytest.raises(TlsError):
            run(scenario)
        assert s.messages == []


def test_pool_limits_through_the_constructors(smtp_server: FakeSmtpServer) -> None:
    settings = smtp_server.smtp_settings()
    client = AsyncDeliveryClient.own_smtp(USER, settings, max_per_server=2, messages_in_flight=5)
    assert client.default_concurrency == 10
    pool = AsyncConnectionPool()
    with pytest.raises(ConfigurationError):
        AsyncDeliveryClient.own_smtp(USER, settings, pool=pool, max_per_server=2)
    with pytest.raises(ConfigurationError):
        AsyncDeliveryClient.own_smtp(USER, settings, transport=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AsyncConnectionPool(messages_in_flight=0)


@pytest.mark.parametrize("limit", ["max_per_server", "messages_in_flight"])
def test_a_zero_limit_is_refused_as_by_the_sync_client(limit: str) -> None:
    settings = SmtpSettings("127.0.0.1", 2525, Security.NONE)
    for client_class in (DeliveryClient, AsyncDeliveryClient):  # one rule, both front doors
        with pytest.raises(ConfigurationError) as info:
            client_class.own_smtp(USER, settings, **{limit: 0})  # type: ignore[arg-type]
        assert info.value.field == limit


def test_connection_test_archive_folders_and_import(
    smtp_server: FakeSmtpServer, imap_server: FakeImapServer
) -> None:
    sender = DeliveryClient.own_smtp("billing@supplier.example", smtp_server.smtp_settings())
    invoice = sender.prepare(
        DocumentEmail(
            to=USER,
            subject="Invoice",
            body="b",
            attachments=[Attachment("invoice.pdf", INVOICE_PDF)],
        )
    )
    imap_server.seed("INBOX", invoice.data)

    async def scenario() -> None:
        async with AsyncDeliveryClient.own_smtp(
            USER, smtp_server.smtp_settings(), imap=imap_server.imap_settings()
        ) as client:
            report = await client.test_connection()
            assert report.ok and report.imap is not None and report.imap.ok
            assert [s.name for s in report.steps][-1] == "auth"
            result = await client.send(_emails(1, "archived")[0])
            assert result.archived is True and result.archive_folder == "Sent"
            assert (await client.archive(result)).archived is True  # never twice
            folders = await client.list_folders()
            assert any(f.special_use == "\\Sent" for f in folders)
            batch = await client.import_documents()
            assert [d.content for d in batch.documents] == [INVOICE_PDF]

    run(scenario)
    assert len(imap_server.messages("Sent", user=USER)) == 1


def test_leaving_send_many_early_cancels_the_rest(smtp_server: FakeSmtpServer) -> None:
    async def scenario() -> int:
        async with AsyncDeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
            outcomes = client.send_many(_emails(40, "early"), concurrency=2)
            first = await anext(outcomes)
            await outcomes.aclose()  # type: ignore[attr-defined]
            return first.index

    assert run(scenario) in (0, 1)
    assert 1 <= len(smtp_server.messages) <= 4  # the running ones at most, never 40


@pytest.mark.realserver
def test_postfix_takes_a_pipelined_batch_from_the_async_client(mta: RealMailServers) -> None:
    async def scenario() -> list[BulkOutcome]:
        async with AsyncDeliveryClient.own_smtp(
            "alice@example.test", alice_smtp(mta), messages_in_flight=3, max_per_server=2
        ) as client:
            report = await client.test_connection()
            assert report.ok, report
            emails = [
                DocumentEmail(to="bob@example.test", subject=f"async {n}", body="b")
                for n in range(6)
            ]
            return await _all(client.send_many(emails))

    outcomes = run(scenario)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    received = mta.wait_for_messages("bob@example.test", count=6)
    subjects = sorted(str(email.message_from_bytes(raw)["Subject"]) for raw in received)
    assert subjects == [f"async {n}" for n in range(6)]


def test_every_wait_for_a_reply_asks_for_an_immediate_ack(
    smtp_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the sync client does: Postfix sends its second small write only after our ACK
    (Nagle), and Linux delays ACKs by up to 40 ms. Without this the async client took
    44.6 ms per message to a real Postfix on loopback, the sync one 2.1 ms."""
    from mailbridge.smtp import _async_connection

    asked: list[int] = []
    monkeypatch.setattr(_async_connection, "ack_at_once", lambda sock: asked.append(sock.fileno()))

    async def scenario() -> None:
        async with AsyncDeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
            await client.send(DocumentEmail(to="jane@customer.example", subject="s", body="b"))

    run(scenario)
    assert smtp_server.messages[0].tls  # the same TCP socket before and after STARTTLS
    # greeting, EHLO, STARTTLS, EHLO, AUTH, and the message's replies at least
    assert len(asked) >= 6, asked
    assert len(set(asked)) == 1 and asked[0] >= 0


def test_a_failing_input_yields_what_was_sent_then_raises(smtp_server: FakeSmtpServer) -> None:
    class InputBroke(Exception):
        pass

    def emails() -> Iterator[DocumentEmail]:
        yield from _emails(5, "input")
        raise InputBroke("the application's query failed")

    seen: list[int] = []

    async def scenario() -> None:
        async with AsyncDeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
            async for outcome in client.send_many(emails(), concurrency=3):
                assert outcome.ok, outcome.error
                seen.append(outcome.index)

    with pytest.raises(InputBroke):
        run(scenario)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert len(smtp_server.messages) == 5


def test_a_slow_reader_holds_the_batch_back(smtp_server: FakeSmtpServer) -> None:
    """Sends run ahead of the caller by at most twice `concurrency` outcomes."""

    async def scenario() -> int:
        async with AsyncDeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
            outcomes = client.send_many(_emails(40, "slow"), concurrency=2)
            await anext(outcomes)
            for _ in range(50):  # the caller is busy; the sends must stop on their own
                await asyncio.sleep(0.01)
            sent = len(smtp_server.messages)
            rest = [outcome async for outcome in outcomes]
            assert all(outcome.ok for outcome in rest)
            return sent

    assert run(scenario) <= 2 * 2 + 1  # the first outcome taken frees one more
    assert len(smtp_server.messages) == 40
