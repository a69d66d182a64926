"""SIGKILL crash tests: worker processes killed at chosen points, then restarted.

Every message must reach the server exactly once, except those reported
`outcome_unknown` (at most once each), whose number never exceeds kills x
messages in flight. Message-IDs are counted at the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailbridge
from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.outbox import Outbox, State
from mailbridge.testing import FakeImapServer, FakeSmtpServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import ALICE, alice_smtp

WORKER = Path(__file__).with_name("_outbox_crash_worker.py")
SRC = str(Path(mailbridge.__file__).resolve().parent.parent)
CONCURRENCY = 8
LEASE = 0.5
MESSAGES = 300
LATER = "later@customer.example"  # answered 451 until the faults are lifted


def smtp_config(server: FakeSmtpServer) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "security": "none"}


class WorkerRuns:
    """Starts worker processes for one outbox and tells how each ended."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        smtp: dict[str, Any],
        sender: str,
        imap: dict[str, Any] | None = None,
    ) -> None:
        self.tmp_path, self.url, self.smtp, self.sender = tmp_path, url, smtp, sender
        self.imap = imap
        self.kills = 0
        self.current: subprocess.Popen[str] | None = None

    def start(self, point: str = "none", nth: int = 0) -> subprocess.Popen[str]:
        config = {
            "url": self.url,
            "smtp": self.smtp,
            "sender": self.sender,
            "imap": self.imap,
            "point": point,
            "nth": nth,
            "concurrency": CONCURRENCY,
            "lease": LEASE,
            "linger": LEASE + 0.3,
        }
        path = self.tmp_path / f"worker-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(config))
        self.current = subprocess.Popen(
            [sys.executable, str(WORKER), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        return self.current

    def wait(self, process: subprocess.Popen[str], timeout: float = 30.0) -> int:
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
            raise AssertionError("a worker did not finish in time") from None
        if process.returncode == -signal.SIGKILL:
            self.kills += 1
        else:
            assert process.returncode == 0, err[-3000:]
        return process.returncode

    def killed_at(self, point: str, nth: int) -> None:
        code = self.wait(self.start(point, nth))
        assert code == -signal.SIGKILL, f"the worker was not killed at {point} #{nth}"


class DataHook:
    """The server's DATA handler, patched: it can kill the worker while receiving DATA.

    `arm()` makes the tenth DATA from now kill the current worker before the server
    answers. With `sent_folder`, every accepted message is also filed in that IMAP
    account's Sent folder, as Gmail and Microsoft 365 do.
    """

    def __init__(
        self, server: FakeSmtpServer, runs: WorkerRuns, sent_folder: FakeImapServer | None = None
    ) -> None:
        self.runs, self.sent_folder = runs, sent_folder
        self.seen, self.kill_at = 0, -1
        self.original = server._handler.handle_DATA
        server._handler.handle_DATA = self.handle_DATA  # type: ignore[method-assign]

    def arm(self) -> None:
        self.kill_at = self.seen + 10

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        self.seen += 1
        if self.seen == self.kill_at and self.runs.current is not None:
            os.kill(self.runs.current.pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        reply = str(await self.original(smtp, session, envelope))
        if self.sent_folder is not None and reply.startswith("250"):
            self.sent_folder.seed("Sent", envelope.original_content or b"")
        return reply


def enqueue_all(outbox: Outbox, client: DeliveryClient, to: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        recipient = LATER if n % 10 == 3 else to
        email = DocumentEmail(to=recipient, subject=f"Invoice {n}", body="Attached.")
        ids.append(outbox.enqueue("acme", email, client=client))
    return ids


def settle(outbox: Outbox, ids: list[str], received: Counter[str], kills: int) -> dict[str, int]:
    statuses = [outbox.status(id) for id in ids]
    states = Counter(status.state for status in statuses)
    assert set(states) <= {State.SENT, State.OUTCOME_UNKNOWN}, states
    for status in statuses:
        if status.state is State.SENT:
            assert received[status.message_id] == 1, status
        else:
            assert received[status.message_id] <= 1, status
    duplicates = sum(count - 1 for count in received.values() if count > 1)
    unknown = states[State.OUTCOME_UNKNOWN]
    figures = {
        "kills": kills,
        "messages": len(ids),
        "duplicates": duplicates,
        "unknown": unknown,
        "sent": states[State.SENT],
    }
    print("crash-test figures:", json.dumps(figures))
    assert duplicates == 0
    assert unknown <= kills * CONCURRENCY
    assert sum(received.values()) <= len(ids)
    return figures


@pytest.fixture
def server() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(tls="none") as running:
        yield running


def test_sigkill_at_every_point_sends_each_message_once(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    server.refuse_recipient(LATER, "451 4.7.1 Try again later")
    with Outbox.open(url) as outbox:
        ids = enqueue_all(outbox, client, "jane@customer.example", MESSAGES)
    runs = WorkerRuns(tmp_path, url, smtp_config(server), "billing@acme.example")
    data = DataHook(server, runs)
    for _ in range(2):  # each point twice: ten kills while the backlog drains
        runs.killed_at("before_claim_commit", 3)
        runs.killed_at("after_claim", 3)
        data.arm()
        runs.killed_at("during_data", 0)
        runs.killed_at("after_250_before_commit", 15)
        runs.killed_at("during_backoff", 2)
    server.refused_recipients.clear()
    runs.wait(runs.start(), timeout=60)
    received = Counter(m.message["Message-ID"] for m in server.messages)
    with Outbox.open(url) as outbox:
        figures = settle(outbox, ids, received, runs.kills)
    assert figures["kills"] == 10
    assert figures["sent"] >= MESSAGES - 10 * CONCURRENCY


def test_with_a_sent_folder_every_interrupted_message_is_settled_as_sent(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with FakeImapServer(users={"billing@acme.example": "imap-pw"}) as imap:
        imap_config = {
            "host": imap.host,
            "port": imap.port,
            "security": "implicit_tls",
            "username": "billing@acme.example",
            "password": "imap-pw",
            "ca_file": str(imap.ca_file),
        }
        with Outbox.open(url) as outbox:
            ids = enqueue_all(outbox, client, "jane@customer.example", MESSAGES)
        runs = WorkerRuns(tmp_path, url, smtp_config(server), "billing@acme.example", imap_config)
        data = DataHook(server, runs, sent_folder=imap)  # the provider files its own copy
        runs.killed_at("after_claim", 3)
        runs.killed_at("after_250_before_commit", 15)
        data.arm()
        runs.killed_at("during_data", 0)
        data.arm()
        runs.killed_at("during_data", 0)
        runs.killed_at("before_claim_commit", 3)
        runs.wait(runs.start(), timeout=60)
        assert len(imap.messages("Sent")) == server.delivered_count
    received = Counter(m.message["Message-ID"] for m in server.messages)
    with Outbox.open(url) as outbox:
        figures = settle(outbox, ids, received, runs.kills)
    assert (figures["kills"], figures["unknown"], figures["sent"]) == (5, 0, MESSAGES)


def test_sigterm_finishes_what_is_in_flight_and_releases_the_rest(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with Outbox.open(url) as outbox:
        ids = enqueue_all(outbox, client, "jane@customer.example", 40)
    server.stall_seconds = 0.3  # each MAIL FROM waits: messages stay in flight
    runs = WorkerRuns(tmp_path, url, smtp_config(server), "billing@acme.example")
    process = runs.start()
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.8)
    process.send_signal(signal.SIGTERM)
    assert runs.wait(process, timeout=20) == 0
    with Outbox.open(url) as outbox:
        counts = outbox.counts()
        assert State.CLAIMED not in counts  # nothing left held
        assert 0 < counts.get(State.SENT, 0) < 40
        server.stall_seconds = 0.0
        runs.wait(runs.start(), timeout=30)
        received = Counter(m.message["Message-ID"] for m in server.messages)
        settle(outbox, ids, received, kills=0)


def test_sigkill_against_real_postfix_sends_each_message_once(
    tmp_path: Path, mta: RealMailServers
) -> None:
    settings = alice_smtp(mta)
    smtp = {
        "host": settings.host,
        "port": settings.port,
        "security": "starttls",
        "username": ALICE,
        "password": settings.password.reveal() if settings.password else None,
        "ca_file": str(settings.ca_file),
    }
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    client = DeliveryClient.own_smtp(ALICE, settings)
    with Outbox.open(url) as outbox:
        ids = [
            outbox.enqueue(
                "alice",
                DocumentEmail(to="bob@example.test", subject=f"Invoice {n}", body="."),
                client=client,
            )
            for n in range(MESSAGES)
        ]
    runs = WorkerRuns(tmp_path, url, smtp, ALICE)
    runs.killed_at("after_claim", 4)
    runs.killed_at("after_250_before_commit", 20)
    runs.killed_at("before_claim_commit", 6)
    runs.killed_at("after_250_before_commit", 12)
    runs.wait(runs.start(), timeout=90)
    with Outbox.open(url) as outbox:
        delivered = sum(1 for id in ids if outbox.status(id).state is State.SENT)
        messages = mta.wait_for_messages("bob@example.test", delivered, timeout=30)
        time.sleep(0.5)  # anything an unknown message delivered arrives meanwhile too
        messages = mta.wait_for_messages("bob@example.test", delivered, timeout=5)
        received = Counter(_message_id(data) for data in messages)
        settle(outbox, ids, received, runs.kills)


def _message_id(data: bytes) -> str:
    for line in data.split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""
