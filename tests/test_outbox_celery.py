"""The outbox on Celery with a real broker (Redis) and real ``celery worker`` processes.

Each Message-ID is counted at the server: a message Celery runs twice (duplicate dispatch,
Redis's visibility timeout, a worker lost with acks_late) must arrive once.
"""

from __future__ import annotations

import collections
import email
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.pytest_plugin import FAKE_PASSWORD, FAKE_USER
from mailbridge.testing.realservers import CeleryWorkers, RealRedisServer

pytest.importorskip("celery", reason="the celery extra is not installed")

from celery import Celery

from mailbridge.outbox import Outbox, State
from mailbridge.outbox.celery import OutboxTasks, register

ROOT = Path(__file__).resolve().parent.parent
TENANTS = ("acme", "globex", "initech")
# The workers' cwd is their log directory: this process's import path, made absolute.
PYTHONPATH = [
    os.path.abspath(path) for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path
]
FINAL = {State.SENT, State.FAILED, State.OUTCOME_UNKNOWN, State.PARKED, State.CANCELLED}


@dataclass
class Setup:
    """What a test runs on: the outbox, the client side of the app, workers, the server."""

    outbox: Outbox
    tasks: OutboxTasks
    workers: CeleryWorkers
    server: FakeSmtpServer
    kill_dir: Path

    def enqueue(self, count: int, *, dispatch: bool = True) -> list[str]:
        return [
            self.outbox.enqueue(
                TENANTS[number % len(TENANTS)],
                DocumentEmail(
                    to="jane@example.test", subject=f"Invoice {number}", body="Attached."
                ),
                dispatch=self.tasks.dispatch if dispatch else None,
            )
            for number in range(count)
        ]

    def wait_final(self, ids: list[str], timeout: float) -> dict[str, State]:
        """Every message's state once all are final; fails with the workers' logs if not."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.outbox.counts()
            if not counts.get(State.QUEUED) and not counts.get(State.CLAIMED):
                return {id: self.outbox.status(id).state for id in ids}
            assert time.monotonic() < deadline, f"{counts}\n{self.workers.log_tail()}"
            time.sleep(0.1)

    def arrivals(self) -> collections.Counter[str]:
        """How often each Message-ID arrived at the server."""
        return collections.Counter(
            str(email.message_from_bytes(message.data)["Message-ID"])
            for message in self.server.messages
        )

    def runs(self) -> int:
        """How many deliver tasks the workers ran to the end, from their logs (all starts)."""
        return sum(
            "mailbridge.outbox.deliver[" in line and "succeeded in" in line
            for logs in self.workers.log_files
            for log in logs
            for line in log.read_text(errors="replace").splitlines()
        )

    def leave_ticket(self, point: str, victim: str) -> Path:
        ticket = self.kill_dir / point
        ticket.write_text(victim)
        return ticket


@pytest.fixture
def broker(redis_server: RealRedisServer) -> RealRedisServer:
    redis_server.flush()
    return redis_server


def client_for(server: FakeSmtpServer) -> DeliveryClient:
    return DeliveryClient.own_smtp(FAKE_USER, server.smtp_settings())


@pytest.fixture
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, broker: RealRedisServer
) -> Iterator[Setup]:
    options: dict[str, Any] = getattr(request, "param", {})
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    lease = options.get("lease", 5.0)
    kill_dir = tmp_path / "kills"
    kill_dir.mkdir()
    with FakeSmtpServer(users={FAKE_USER: FAKE_PASSWORD}) as server:
        client = client_for(server)
        outbox = Outbox.open(url, resolve_client=lambda tenant: client)
        app = Celery("outbox_celery_tests", broker=broker.url)
        tasks = register(app, url, lambda tenant: client, lease=lease)
        env = {
            "PYTHONPATH": os.pathsep.join([str(ROOT), *PYTHONPATH, str(ROOT / "src")]),
            "BROKER": broker.url,
            "OUTBOX_URL": url,
            "SMTP_PORT": str(server.port),
            "SMTP_CA": str(server.ca_file),
            "LEASE": str(lease),
            "VISIBILITY_TIMEOUT": str(options.get("visibility_timeout", 3600)),
            "KILL_DIR": str(kill_dir),
        }
        workers = CeleryWorkers(
            "tests._outbox_celery_tasks", tmp_path / "workers", count=2, concurrency=2, env=env
        )
        try:
            with workers:
                yield Setup(outbox, tasks, workers, server, kill_dir)
        finally:
            app.close()
            outbox.close()
            client.close()


def test_300_messages_through_two_workers_arrive_once_each(setup: Setup) -> None:
    started = time.monotonic()
    ids = setup.enqueue(300)
    states = setup.wait_final(ids, timeout=90)
    elapsed = time.monotonic() - started
    assert collections.Counter(states.values()) == {State.SENT: 300}
    arrivals = setup.arrivals()
    assert len(arrivals) == 300
    assert set(arrivals.values()) == {1}
    assert {setup.outbox.status(id).message_id for id in ids} == set(arrivals)
    print(f"300 messages through 2 Celery workers (2 processes each): {elapsed:.1f} s")


def test_a_message_dispatched_three_times_is_sent_once(setup: Setup) -> None:
    ids = setup.enqueue(30)
    for id in ids:  # the application dispatches again, e.g. a retried web request
        setup.tasks.dispatch(id)
        setup.tasks.dispatch(id)
    states = setup.wait_final(ids, timeout=60)
    deadline = time.monotonic() + 30
    while setup.runs() < 90:  # the extra tasks ran too, and found nothing to send
        assert time.monotonic() < deadline, setup.workers.log_tail()
        time.sleep(0.1)
    assert set(states.values()) == {State.SENT}
    assert set(setup.arrivals().values()) == {1}
    assert len(setup.arrivals()) == 30


@pytest.mark.parametrize("setup", [{"visibility_timeout": 1}], indirect=True)
def test_redelivery_after_the_visibility_timeout_sends_once(setup: Setup) -> None:
    # celery#4766: a task scheduled further ahead than Redis's visibility timeout is handed
    # to another worker again and again while the first holds it, and every copy runs.
    ids = setup.enqueue(20, dispatch=False)
    for id in ids:
        setup.tasks.deliver.apply_async((id,), countdown=4)
    states = setup.wait_final(ids, timeout=60)
    time.sleep(1.5)  # copies restored late run too
    assert setup.runs() > 20, setup.workers.log_tail()
    assert set(states.values()) == {State.SENT}
    assert len(setup.arrivals()) == 20
    assert set(setup.arrivals().values()) == {1}


@pytest.mark.parametrize(
    ("point", "arrived", "unknown"),
    [("prerun", 10, 0), ("claimed", 9, 1), ("after_250", 10, 1)],
)
@pytest.mark.parametrize("setup", [{"lease": 3.0}], indirect=True)
def test_a_pool_process_killed_mid_task_loses_nothing_and_sends_nothing_twice(
    setup: Setup, point: str, arrived: int, unknown: int
) -> None:
    ticket = setup.leave_ticket(point, "child")
    ids = setup.enqueue(10)
    states = setup.wait_final(ids, timeout=60)
    assert not ticket.exists(), "no process reached the kill point"
    assert "WorkerLostError" in setup.workers.log_tail(200)
    # acks_late + reject_on_worker_lost: the task came back. Its message was claimed by the
    # dead process: never sent again blindly, settled when the lease ended.
    assert collections.Counter(states.values()) == {
        State.SENT: 10 - unknown,
        **({State.OUTCOME_UNKNOWN: unknown} if unknown else {}),
    }
    assert len(setup.arrivals()) == arrived
    assert set(setup.arrivals().values()) == {1}
