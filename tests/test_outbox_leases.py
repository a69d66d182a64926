"""Leases: a sender that lost its lease (paused, slow) never sends over the new holder."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.outbox import Outbox, State
from mailbridge.providers import ProviderRegistry
from mailbridge.testing import FakeSmtpServer

from .test_outbox_crash import CONCURRENCY, LEASE, WorkerRuns, server, smtp_config

__all__ = ["server"]  # the fixture, shared with the crash tests

SENDER = "billing@acme.example"


def _client(server: FakeSmtpServer) -> DeliveryClient:
    return DeliveryClient.own_smtp(SENDER, server.smtp_settings())


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] in {"T", "t"}


def test_a_paused_worker_that_lost_its_leases_sends_nothing_when_it_resumes(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    with Outbox.open(url) as outbox:
        ids = [
            outbox.enqueue(
                "acme",
                DocumentEmail(to="jane@x.example", subject=f"{n}", body="."),
                client=_client(server),
            )
            for n in range(CONCURRENCY)
        ]
    runs = WorkerRuns(tmp_path, url, smtp_config(server), SENDER)
    paused = runs.start("pause_after_claim", 1)
    try:
        for _ in range(200):  # the worker stops itself (SIGSTOP) right after its claim
            if _stopped(paused.pid):
                break
            time.sleep(0.05)
        assert _stopped(paused.pid)
        time.sleep(LEASE + 0.2)  # its leases run out while it is stopped
        with Outbox.open(url) as outbox:  # a rival takes the messages over: never resent blindly
            rival = outbox.worker(lambda tenant: _client(server), concurrency=CONCURRENCY)
            assert rival.run(until_idle=True).unknown == CONCURRENCY
    finally:
        paused.send_signal(signal.SIGCONT)
    assert runs.wait(paused) == 0
    assert server.delivered_count == 0  # the resumed worker did not send what it no longer held
    with Outbox.open(url) as outbox:
        statuses = [outbox.status(id) for id in ids]
    assert {status.state for status in statuses} == {State.OUTCOME_UNKNOWN}
    assert {status.summary for status in statuses} == {  # not "sent": it never was
        "outcome unknown: the previous worker stopped while sending it; check before sending again"
    }


def test_deliver_keeps_its_lease_while_a_slow_send_runs(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    server.stall_seconds = 0.8  # MAIL FROM waits longer than three leases
    with Outbox.open(
        f"sqlite:///{tmp_path / 'outbox.db'}", resolve_client=lambda t: _client(server)
    ) as outbox:
        id = outbox.enqueue("acme", DocumentEmail(to="jane@x.example", subject="1", body="."))
        first = threading.Thread(target=outbox.deliver, args=(id,), kwargs={"lease": 0.25})
        first.start()
        time.sleep(0.5)
        again = outbox.deliver(id, lease=0.25)  # Celery ran the task again meanwhile
        first.join(30)
        assert again.state is State.CLAIMED  # still held by the first run: nothing settled
        assert outbox.status(id).state is State.SENT
    assert server.delivered_count == 1


BUSY = """
[[provider]]
id = "onebyone"
name = "One By One"
smtp = [{ host = "127.0.0.1", port = 465, security = "implicit_tls" }]
limits = { connections = 1, source = "a test" }
"""


def test_a_tenant_at_its_connection_limit_does_not_starve_the_others(
    tmp_path: Path, server: FakeSmtpServer
) -> None:
    registry = ProviderRegistry.from_toml(BUSY)
    with Outbox.open(f"sqlite:///{tmp_path / 'outbox.db'}", registry=registry) as outbox:
        prepared = _client(server).prepare(
            DocumentEmail(to="jane@x.example", subject="1", body=".")
        )
        for _ in range(100):  # a flood from one tenant allowed one message at a time
            outbox.enqueue("flood", prepared, client=_client(server))
        now = time.time() + 1
        first = outbox.store.claim("w1", limit=4, lease=60, now=now)
        assert [c.tenant for c in first] == ["flood"]  # its one connection
        other = outbox.enqueue("other", prepared, client=_client(server))
        second = outbox.store.claim("w2", limit=4, lease=60, now=now)
        assert [c.id for c in second] == [other]  # not hidden behind the flood's backlog
