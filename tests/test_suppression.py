"""The suppression list: SQLite across threads and processes, and send() refusing before sending."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import pickle
import sqlite3
import threading
from pathlib import Path

import pytest

from mailbridge import (
    AsyncDeliveryClient,
    ConfigurationError,
    DeliveryClient,
    DocumentEmail,
    RecipientsSuppressed,
    SuppressionListError,
)
from mailbridge._identity import PlatformRelay
from mailbridge.deliverability import SqliteSuppressionList, Suppression, SuppressionList
from mailbridge.testing import FakeSmtpServer

from .conftest import USER

EMAIL = DocumentEmail(
    to="jane@customer.example", cc="gone@customer.example", subject="Invoice", body="Hello"
)


@pytest.fixture
def suppression(tmp_path: Path) -> SqliteSuppressionList:
    return SqliteSuppressionList(tmp_path / "suppressed.sqlite3")


def test_add_lookup_and_remove(suppression: SqliteSuppressionList) -> None:
    assert isinstance(suppression, SuppressionList)
    assert suppression.get("gone@customer.example") is None
    entry = suppression.add(
        "Gone@Customer.Example", reason="user_unknown", status="5.1.1", detail="550 no\r\nsuch"
    )
    assert entry.address == "gone@customer.example" and entry.detail == "550 no such"
    assert entry.added_at.tzinfo is not None
    found = suppression.lookup(["GONE@customer.example", "jane@customer.example"])
    assert list(found) == ["GONE@customer.example"]  # keyed as asked
    assert found["GONE@customer.example"].status == "5.1.1"
    assert "<gone@customer.example>" in suppression and len(suppression) == 1
    suppression.add("gone@customer.example", reason="mailbox_full", status="5.2.2")
    assert [e.reason for e in suppression.entries()] == ["mailbox_full"]  # newest wins
    assert suppression.remove("gone@customer.example") is True
    assert suppression.remove("gone@customer.example") is False
    assert len(suppression) == 0


def test_an_idn_domain_is_one_address_in_both_spellings(suppression: SqliteSuppressionList) -> None:
    suppression.add("max@bücher.example", reason="user_unknown", status="5.1.1")
    assert "max@xn--bcher-kva.example" in suppression


def test_the_list_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    SqliteSuppressionList(path).add("a@example.com", reason="user_unknown", status="5.1.1")
    (entry,) = SqliteSuppressionList(path).entries()
    assert entry.address == "a@example.com"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"reason": "User Unknown"}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "mailbox_full", "status": "4.2.2"}, "status"),  # soft: not suppressed
        ({"reason": "other", "status": "5.1"}, "status"),
    ],
)
def test_entries_are_checked(
    suppression: SqliteSuppressionList, arguments: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=field):
        suppression.add("a@example.com", **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", ["no-at-sign", "@example.com", "a@", "a\n@example.com", 5])
def test_addresses_are_checked(suppression: SqliteSuppressionList, address: object) -> None:
    with pytest.raises(ConfigurationError, match="address"):
        suppression.add(address, reason="user_unknown")  # type: ignore[arg-type]


def test_a_long_detail_is_shortened(suppression: SqliteSuppressionList) -> None:
    entry = suppression.add("a@example.com", reason="other", detail="x" * 100_000)
    assert entry.detail is not None and len(entry.detail) == 1000


def test_a_broken_database_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    suppression = SqliteSuppressionList(path)
    path.write_bytes(b"this is not a database" * 100)
    for wal in tmp_path.glob("s.sqlite3-*"):
        wal.unlink()
    with pytest.raises(SuppressionListError):
        suppression.lookup(["a@example.com"])
    with pytest.raises(SuppressionListError):
        SqliteSuppressionList(tmp_path / "missing-directory" / "s.sqlite3")


def test_many_threads_add_and_read_at_once(suppression: SqliteSuppressionList) -> None:
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            for item in range(40):
                suppression.add(f"t{number}-{item}@example.com", reason="user_unknown")
                assert suppression.get(f"t{number}-{item}@example.com") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(suppression) == 240


def _add_many(path: str, number: int) -> None:
    suppression = SqliteSuppressionList(path)
    for item in range(50):
        suppression.add(f"p{number}-{item}@example.com", reason="user_unknown", status="5.1.1")


def test_several_processes_write_to_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    SqliteSuppressionList(path)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_add_many, args=(path, n)) for n in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert len(SqliteSuppressionList(path)) == 150


def test_send_refuses_a_suppressed_recipient_before_any_byte_goes_out(
    smtp_server: FakeSmtpServer, suppression: SqliteSuppressionList
) -> None:
    suppression.add("gone@customer.example", reason="user_unknown", status="5.1.1")
    settings = smtp_server.smtp_settings()
    with DeliveryClient.own_smtp(USER, settings, suppression=suppression) as client:
        with pytest.raises(RecipientsSuppressed) as caught:
            client.send(EMAIL)
        assert smtp_server.connections == 0 and smtp_server.messages == []
        error = caught.value
        assert list(error.suppressed) == ["gone@customer.example"]
        assert "gone@customer.example (user_unknown, 5.1.1)" in str(error)
        assert "jane@customer.example" not in str(error)
        copy = pickle.loads(pickle.dumps(error))
        assert copy.suppressed["gone@customer.example"].status == "5.1.1"
        # forced: the whole message goes to both
        result = client.send(EMAIL, allow_suppressed=True)
        assert sorted(result.accepted) == ["gone@customer.example", "jane@customer.example"]
        # and Bcc recipients are envelope recipients too
        suppression.remove("gone@customer.example")
        suppression.add("hidden@customer.example", reason="user_unknown")
        bcc = DocumentEmail(
            to="jane@customer.example", bcc="hidden@customer.example", subject="s", body="b"
        )
        with pytest.raises(RecipientsSuppressed, match=r"hidden@customer\.example"):
            client.send(bcc)
    assert len(smtp_server.messages) == 1


def test_without_a_suppression_list_nothing_is_asked(smtp_server: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        assert client.send(EMAIL).ok


def test_the_relay_and_spf_constructors_take_a_suppression_list(
    smtp_server: FakeSmtpServer, suppression: SqliteSuppressionList
) -> None:
    suppression.add("gone@customer.example", reason="user_unknown", status="5.1.1")
    relay = PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        sending_ips=("192.0.2.1",),
    )
    with DeliveryClient.relay("billing@acme.example", relay, suppression=suppression) as client:
        with pytest.raises(RecipientsSuppressed):
            client.send(EMAIL)
    spf = DeliveryClient.spf_imitation("billing@acme.example", relay, suppression=suppression)
    assert spf.suppression is suppression
    spf.close()
    with pytest.raises(ConfigurationError, match="suppression"):
        DeliveryClient.own_smtp(USER, smtp_server.smtp_settings(), suppression=object())  # type: ignore[arg-type]
    assert smtp_server.connections == 0


class _MemoryList:
    """A SuppressionList of one's own: the protocol is all send() needs."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    def lookup(self, addresses: object) -> dict[str, Suppression]:
        addresses = tuple(addresses)  # type: ignore[arg-type]
        self.asked.append(addresses)
        when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        return {a: Suppression(a, "mailbox_full", "5.2.2", when) for a in addresses if "gone" in a}

    def add(
        self, address: str, *, reason: str, status: str | None = None, detail: str | None = None
    ) -> Suppression:
        raise NotImplementedError

    def remove(self, address: str) -> bool:
        raise NotImplementedError


def test_the_async_client_refuses_in_step_with_the_sync_one(smtp_server: FakeSmtpServer) -> None:
    memory = _MemoryList()

    async def main() -> None:
        settings = smtp_server.smtp_settings()
        async with AsyncDeliveryClient.own_smtp(USER, settings, suppression=memory) as client:
            with pytest.raises(RecipientsSuppressed, match=r"mailbox_full, 5\.2\.2"):
                await client.send(EMAIL)
            assert smtp_server.connections == 0
            result = await client.send(EMAIL, allow_suppressed=True)
            assert len(result.accepted) == 2

    asyncio.run(main())
    assert memory.asked == [("jane@customer.example", "gone@customer.example")]
    assert len(smtp_server.messages) == 1


def test_send_many_reports_a_suppressed_message_and_sends_the_others(
    smtp_server: FakeSmtpServer, suppression: SqliteSuppressionList
) -> None:
    suppression.add("gone@customer.example", reason="user_unknown", status="5.1.1")
    emails = [
        DocumentEmail(to=f"{name}@customer.example", subject="Invoice", body="b")
        for name in ("jane", "gone", "max")
    ]
    settings = smtp_server.smtp_settings()
    with DeliveryClient.own_smtp(USER, settings, suppression=suppression) as client:
        outcomes = sorted(client.send_many(emails, concurrency=3), key=lambda o: o.index)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, RecipientsSuppressed)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "jane@customer.example",
        "max@customer.example",
    ]


def test_an_idn_domain_is_encoded_as_mail_servers_do_idna2008(
    suppression: SqliteSuppressionList,
) -> None:
    suppression.add("kunde@xn--strae-oqa.de", reason="user_unknown", status="5.1.1")
    assert "kunde@straße.de" in suppression  # the bounce's A-label, the invoice's U-label
    assert "kunde@strasse.de" not in suppression  # another domain (IDNA 2003 mapped ß to ss)
