"""Faults around sending: a bug in one send, a broker that is down at dispatch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbridge import DeliveryClient, DocumentEmail, OutboxError
from mailbridge.cli import main
from mailbridge.outbox import Outbox, State, _sqlite
from mailbridge.outbox._sending import Sender
from mailbridge.testing import FakeSmtpServer


@pytest.fixture
def server() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(tls="none") as running:
        yield running


def test_a_bug_sending_one_message_still_records_the_others(
    tmp_path: Path, server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resolve(tenant: str) -> DeliveryClient:
        return DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())

    server.stall_seconds = 0.3  # the others are still being sent when the bug surfaces
    with Outbox.open(f"sqlite:///{tmp_path / 'outbox.db'}", resolve_client=resolve) as outbox:
        ids = [
            outbox.enqueue("acme", DocumentEmail(to="jane@x.example", subject=f"{n}", body="."))
            for n in range(4)
        ]
        worker = outbox.worker(concurrency=4)
        process = Sender.process

        def buggy(sender: Sender, claimed: Any, *args: Any) -> Any:
            if claimed.id == ids[0]:
                raise ZeroDivisionError  # a bug in our own code, for this one message
            return process(sender, claimed, *args)

        monkeypatch.setattr(Sender, "process", buggy)
        with pytest.raises(ZeroDivisionError):  # a bug is not disguised: the run stops
            worker.run(until_idle=True)
        states = [outbox.status(id).state for id in ids]
    assert states == [State.CLAIMED, State.SENT, State.SENT, State.SENT]
    assert server.delivered_count == 3


def test_a_dispatch_that_fails_still_returns_the_stored_messages_id(
    tmp_path: Path, server: FakeSmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(id: str) -> None:
        raise ConnectionRefusedError("redis://:s3cret@127.0.0.1:1/0")

    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with Outbox.open(f"sqlite:///{tmp_path / 'outbox.db'}") as outbox:
        email = DocumentEmail(to="jane@x.example", subject="Invoice", body=".")
        id = outbox.enqueue("acme", email, client=client, dispatch=broker_down)
        assert outbox.status(id).state is State.QUEUED  # stored: a sweep or a worker sends it
        assert outbox.counts() == {State.QUEUED: 1}
    assert "ConnectionRefusedError" in caplog.text and "s3cret" not in caplog.text


def test_a_hostile_servers_reply_cannot_reach_the_terminal_or_the_ui(
    tmp_path: Path, server: FakeSmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.sender_reply = "550 5.7.1 \x1b]0;owned\x07\x1b[2J Sender\x00 refused"
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with Outbox.open(url, resolve_client=lambda tenant: client) as outbox:
        id = outbox.enqueue("acme", DocumentEmail(to="jane@x.example", subject="1", body="."))
        outbox.worker(concurrency=1).run(until_idle=True)
        status = outbox.status(id)
    assert status.state is State.FAILED
    assert status.summary.isprintable() and "Sender" in status.summary
    for command in ("status", "list"):
        assert main(["outbox", command, "--url", url, *([id] if command == "status" else [])]) == 0
        out = capsys.readouterr().out
        assert "Sender" in out
        assert not {"\x1b", "\x07", "\x00"} & set(out), out


def test_a_locked_database_mid_run_delays_the_records_and_loses_none(
    tmp_path: Path, server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT", 0.1)  # a slow disk, a long backup: locked
    path = tmp_path / "outbox.db"
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    server.stall_seconds = 0.2
    with Outbox.open(f"sqlite:///{path}", resolve_client=lambda tenant: client) as outbox:
        ids = [
            outbox.enqueue("acme", DocumentEmail(to="jane@x.example", subject=f"{n}", body="."))
            for n in range(4)
        ]
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        worker = outbox.worker(concurrency=4)
        original = outbox.store.exchange
        calls = [0]
        timer = threading.Timer(0.8, blocker.execute, ("COMMIT",))

        def exchange(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            calls[0] += 1
            if calls[0] == 1:  # the claim is committed; now someone holds the write lock
                blocker.execute("BEGIN EXCLUSIVE")
                timer.start()
            return result

        monkeypatch.setattr(outbox.store, "exchange", exchange)
        stats = worker.run(until_idle=True)
        timer.join(5)
        blocker.close()
        assert [outbox.status(id).state for id in ids] == [State.SENT] * 4
    assert stats.sent == 4
    assert server.delivered_count == 4


def test_a_locked_sqlite_outbox_is_an_outbox_error(
    tmp_path: Path, server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "outbox.db"
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with Outbox.open(f"sqlite:///{path}") as outbox:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(OutboxError, match="the outbox database failed: database is lock"):
                outbox.enqueue("acme", DocumentEmail(to="j@x.example", subject="1", body="."),
                               client=client)  # fmt: skip
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert outbox.counts() == {}
