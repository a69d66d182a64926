"""The outbox on Celery with a real broker (Redis) and real ``celery worker`` processes.

Each Message-ID is counted at the server: a message Celery runs twice (duplicate dispatch,
Redis's visibility timeout, a worker lost with acks_late) must arrive once.
"""

from __future__ import annotations

import collections
import email
import os
import re
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
redis = pytest.importorskip("redis", reason="the celery extra is not installed")

from celery import Celery  # noqa: E402

from mailbridge.outbox import Outbox, State  # noqa: E402
from mailbridge.outbox.celery import OutboxTasks, register  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TENANTS = ("acme", "globex", "initech")
# The workers' cwd is their log directory: this process's import path, made absolute.
PYTHONPATH = [
    os.path.abspath(path) for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path
]
KILL_POINTS = ("prerun", "claimed", "after_250")  # see tests/_outbox_celery_tasks.py


@dataclass
class Setup:
    """What a test runs on: the outbox, the client side of the app, workers, the server."""

    outbox: Outbox
    tasks: OutboxTasks
    workers: CeleryWorkers
    server: FakeSmtpServer
    kill_dir: Path
    broker_url: str

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

    def wait_final(
        self, ids: list[str], timeout: float, *, sweep_every: float | None = None
    ) -> dict[str, State]:
        """Every message's state once all are final; fails with the workers' logs if not.

        With ``sweep_every``, sends the sweep task that often, as Celery beat would.
        """
        deadline = time.monotonic() + timeout
        next_sweep = time.monotonic() + (sweep_every or timeout)
        while True:
            counts = self.outbox.counts()
            if not counts.get(State.QUEUED) and not counts.get(State.CLAIMED):
                return {id: self.outbox.status(id).state for id in ids}
            assert time.monotonic() < deadline, self.stuck(counts)
            if sweep_every and time.monotonic() >= next_sweep:
                self.tasks.sweep_task.delay(sweep_every)
                next_sweep = time.monotonic() + sweep_every
            time.sleep(0.1)

    def swept(self) -> int:
        """How many messages the sweep tasks dispatched again, from the workers' logs."""
        found = re.compile(r"outbox sweep: dispatched (\d+) message")
        return sum(
            int(match[1])
            for logs in self.workers.log_files
            for log in logs
            for match in found.finditer(log.read_text(errors="replace"))
        )

    def stuck(self, counts: object) -> str:
        """Why messages are not final: their rows, the broker's queues, the workers' logs."""
        now = time.time()
        rows = [
            f"{row.id} {row.state.value} not_before={row.not_before - now:+.1f}s "
            f"lease={None if row.lease_expires is None else round(row.lease_expires - now, 1)}"
            for state in (State.QUEUED, State.CLAIMED)
            for row in self.outbox.store.rows(state=state, limit=10)
        ]
        broker = redis.Redis.from_url(self.broker_url)
        queues = {
            "celery": broker.llen("celery"),
            "unacked": broker.hlen("unacked"),
            "unacked_index": broker.zcard("unacked_index"),
        }
        broker.close()
        return f"{counts}\n" + "\n".join(rows) + f"\n{queues}\n{self.workers.log_tail(60)}"

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
    if options.get("store") == "sqlite":  # workers on one machine only
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
    else:  # what Celery deployments over several machines use
        url = request.getfixturevalue("postgres_url")
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
            workers.start()
            yield Setup(outbox, tasks, workers, server, kill_dir, broker.url)
        finally:
            for index in range(workers.count):  # no warm shutdown needed: seconds saved
                workers.kill(index)
            app.close()
            outbox.close()
            client.close()


@pytest.mark.parametrize(
    "setup", [{"store": "postgresql"}, {"store": "sqlite"}], indirect=True, ids=lambda o: o["store"]
)
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
    store = setup.outbox.store.url.partition(":")[0]
    print(f"300 messages, {store}, 2 Celery workers of 2 processes: {elapsed:.1f} s")


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


@pytest.mark.parametrize("setup", [{"lease": 3.0}], indirect=True)
def test_pool_processes_killed_mid_task_lose_nothing_and_send_nothing_twice(setup: Setup) -> None:
    # One pool process dies at each point: the task started (nothing claimed), the claim
    # committed (nothing sent), the server's 250 received (not recorded).
    tickets = [setup.leave_ticket(point, "child") for point in KILL_POINTS]
    ids = setup.enqueue(30)
    states = setup.wait_final(ids, timeout=60)
    assert [ticket.name for ticket in tickets if ticket.exists()] == []
    assert setup.workers.log_tail(400).count("WorkerLostError") >= 3
    # acks_late + reject_on_worker_lost: each task came back. A message claimed by the dead
    # process is never sent again blindly: settled when the lease ended, as outcome_unknown
    # (no IMAP here), whether it arrived (after_250) or not (claimed).
    assert collections.Counter(states.values()) == {State.SENT: 28, State.OUTCOME_UNKNOWN: 2}
    assert len(setup.arrivals()) == 29
    assert set(setup.arrivals().values()) == {1}


@pytest.mark.parametrize("setup", [{"lease": 3.0, "visibility_timeout": 2}], indirect=True)
def test_workers_killed_in_turn_lose_nothing_and_send_nothing_twice(setup: Setup) -> None:
    """SIGKILL to a whole worker (main process and pool) at each kill point in turn, restarted.

    Redis hands the dead worker's unacknowledged tasks to the other after the visibility
    timeout; the messages it had claimed are settled when their leases end.
    """
    ids = setup.enqueue(300, dispatch=False)
    started = time.monotonic()
    kills = 0
    for turn, batch in enumerate(range(0, 300, 50)):  # 6 turns of 50 dispatches
        ticket = setup.leave_ticket(KILL_POINTS[turn % len(KILL_POINTS)], "worker")
        for id in ids[batch : batch + 50]:
            setup.tasks.dispatch(id)
        deadline = time.monotonic() + 20
        while ticket.exists():
            assert time.monotonic() < deadline, f"{ticket.name} not reached"
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while all(setup.workers.running(index) for index in range(setup.workers.count)):
            assert time.monotonic() < deadline, "the ticket was taken but nobody died"
            time.sleep(0.01)
        kills += 1
        for index in range(setup.workers.count):
            if not setup.workers.running(index):
                setup.workers.kill(index)  # reaps what is left of it
                setup.workers.start_worker(index, wait=False)
    setup.workers.wait_ready()
    killed_at = time.monotonic()
    states = setup.wait_final(ids, timeout=60, sweep_every=2.0)
    print(f"kills took {killed_at - started:.1f} s, settling {time.monotonic() - killed_at:.1f} s")
    arrivals = setup.arrivals()
    by_state = collections.Counter(states.values())
    message_ids = {id: setup.outbox.status(id).message_id for id in ids}
    unknown = [id for id, state in states.items() if state is State.OUTCOME_UNKNOWN]
    print(
        f"Celery crash test: {kills} kills, 300 messages, "
        f"{sum(count - 1 for count in arrivals.values())} duplicates, {len(unknown)} unknown, "
        f"{setup.swept()} dispatched again by the sweep, {dict(by_state)}"
    )
    assert kills == 6
    assert set(arrivals.values()) == {1}  # nothing twice
    assert set(by_state) <= {State.SENT, State.OUTCOME_UNKNOWN}
    for id, state in states.items():  # nothing lost: sent means arrived
        if state is State.SENT:
            assert arrivals[message_ids[id]] == 1
    assert len(unknown) <= kills * setup.workers.concurrency
