"""Several worker processes drain one PostgreSQL outbox, also while they are SIGKILLed in turn.

Workers are real processes (the crash tests' `tests/_outbox_crash_worker.py`) sending to a
FakeSmtpServer in this process; the Message-IDs the server received are counted. Without
kills every message arrives exactly once. With kills (at the points the worker script's
test-only hooks choose), no message arrives twice, every message ends `sent` or
`outcome_unknown`, and the unknowns are at most kills x messages a worker holds at once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.outbox import Outbox, State
from mailbridge.testing import FakeSmtpServer

pytest.importorskip("psycopg", reason="psycopg 3 is not installed (extra 'postgres')")

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "_outbox_crash_worker.py"
# The worker script's kill points (test-only hooks), each one in turn.
POINTS = (
    "before_claim_commit",
    "after_claim",
    "mid_data",
    "after_250_before_commit",
    "during_backoff",
)
LEASE = 2.0
MESSAGES = 300
CONCURRENCY = 4
LATER = "later@customer.example"  # refused with 451 until a worker was killed in backoff
RUN_LIMIT = 150.0  # seconds a whole drain may take


@attrs.define
class Tally:
    """What the server received against what the outbox says, per Message-ID."""

    kills: int = 0
    by_point: Counter[str] = attrs.field(factory=Counter)
    states: Counter[str] = attrs.field(factory=Counter)
    duplicates: int = 0
    unknown: int = 0
    unknown_at_server: int = 0
    missing_sent: int = 0
    strangers: int = 0
    worker_runs: int = 0
    senders: int = 0


@pytest.fixture
def server() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(tls="none") as running:
        yield running


def enqueue(url: str, server: FakeSmtpServer, count: int, *, later_every: int = 0) -> list[str]:
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with Outbox.open(url, resolve_client=lambda tenant: client) as outbox:
        return [
            outbox.enqueue(
                "acme",
                DocumentEmail(
                    to=LATER if later_every and n % later_every == 0 else f"c{n}@customer.example",
                    subject=f"Invoice {n}",
                    body="Please find your invoice attached.",
                ),
            )
            for n in range(count)
        ]


class Workers:
    """Worker processes (tests/_outbox_crash_worker.py) started and watched by a test."""

    def __init__(self, url: str, server: FakeSmtpServer, directory: Path) -> None:
        self.url, self.server, self.directory = url, server, directory
        self.running: dict[subprocess.Popen[bytes], dict[str, Any]] = {}
        self.numbers = itertools.count()
        self.finished: list[tuple[dict[str, Any], int, str]] = []

    def start(self, kill: dict[str, Any] | None = None) -> subprocess.Popen[bytes]:
        index = next(self.numbers)
        config = {
            "url": self.url, "sender": "billing@acme.example",
            "smtp": {"host": self.server.host, "port": self.server.port, "security": "none"},
            "point": kill["point"] if kill else "none", "nth": kill["nth"] if kill else 0,
            "concurrency": CONCURRENCY, "lease": LEASE, "linger": LEASE + 0.5,
            "index": index, "kill": kill,
        }  # fmt: skip
        path = self.directory / f"worker{index}.json"
        path.write_text(json.dumps(config))
        with (self.directory / f"worker{index}.out").open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, str(WORKER), str(path)],
                stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            )  # fmt: skip
        self.running[process] = config
        return process

    def output(self, config: dict[str, Any]) -> str:
        path = self.directory / f"worker{config['index']}.out"
        return path.read_text("utf-8", "replace")

    def ready(self) -> int:
        """How many running workers have opened the outbox and are about to claim."""
        return sum(1 for c in self.running.values() if "ready" in self.output(c).split())

    def reap(self) -> list[tuple[dict[str, Any], int]]:
        """The (config, return code) of workers that have ended since the last call."""
        ended = []
        for process, config in list(self.running.items()):
            code = process.poll()
            if code is not None:
                del self.running[process]
                self.finished.append((config, code, self.output(config)))
                ended.append((config, code))
        return ended

    def stop(self) -> None:
        for process in self.running:
            process.kill()
        for process in self.running:
            process.wait(10)
        self.running.clear()

    def failures(self) -> list[str]:
        """Output of workers that ended neither normally nor by their own SIGKILL."""
        return [text for _, code, text in self.finished if code not in (0, -signal.SIGKILL)]

    def sent_by_worker(self) -> list[int]:
        return [
            json.loads(text.strip().splitlines()[-1])["sent"]
            for _, code, text in self.finished
            if code == 0
        ]


@contextlib.contextmanager
def held_back(url: str) -> Iterator[None]:
    """Claims wait while this holds the messages table (reads and migrations go on)."""
    import psycopg

    with psycopg.connect(url) as connection:
        connection.execute("LOCK TABLE outbox_messages IN EXCLUSIVE MODE")
        yield


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.02)


def drain(
    url: str,
    server: FakeSmtpServer,
    directory: Path,
    *,
    workers: int,
    kills: int = 0,
    later_every: int = 0,
) -> Tally:
    """Drain the outbox with `workers` processes at a time, `kills` of them SIGKILLed in turn."""
    ids = enqueue(url, server, MESSAGES, later_every=later_every)
    if later_every:
        server.refuse_recipient(LATER, "451 4.3.0 Try again later")
    tally = Tally()
    pending = deque(
        {"point": point, "nth": 1 + n % 3}
        for n, point in zip(range(kills), itertools.cycle(POINTS), strict=False)
    )
    pool = Workers(url, server, directory)
    try:
        with held_back(url):  # the first ones start claiming together
            for _ in range(workers):
                pool.start(pending.popleft() if pending else None)
            wait_until(lambda: pool.ready() == workers, "the workers did not start")
        deadline = time.monotonic() + RUN_LIMIT
        with Outbox.open(url) as outbox:
            while True:
                for config, code in pool.reap():
                    kill = config["kill"]
                    if code == -signal.SIGKILL:
                        tally.kills += 1
                        tally.by_point[kill["point"]] += 1
                    elif kill:  # ran out of work before its kill point: another one tries
                        pending.appendleft(kill)
                waiting = [*pending, *(config["kill"] for config in pool.running.values())]
                if all(not kill or kill["point"] != "during_backoff" for kill in waiting):
                    server.refused_recipients.pop(LATER, None)  # the 451s have served
                counts = outbox.counts()
                busy = counts.get(State.QUEUED, 0) + counts.get(State.CLAIMED, 0)
                if not busy and not pool.running:
                    break
                while len(pool.running) < workers and busy:
                    pool.start(pending.popleft() if pending else None)
                assert time.monotonic() < deadline, f"not drained in {RUN_LIMIT} s: {counts}"
                time.sleep(0.05)
            assert pool.failures() == []
            statuses = [outbox.status(id) for id in ids]
    finally:
        pool.stop()
    received = Counter(message.message["Message-ID"] for message in server.messages)
    ours = {status.message_id for status in statuses}
    tally.worker_runs = len(pool.finished)
    tally.senders = sum(1 for sent in pool.sent_by_worker() if sent)
    tally.strangers = sum(1 for message_id in received if message_id not in ours)
    tally.duplicates = sum(1 for count in received.values() if count > 1)
    for status in statuses:
        tally.states[status.state.value] += 1
        if status.state is State.OUTCOME_UNKNOWN:
            tally.unknown += 1
            tally.unknown_at_server += received[status.message_id] > 0
        elif received[status.message_id] != 1:
            tally.missing_sent += 1
    return tally


@pytest.mark.parametrize("workers", [2, 4])
def test_worker_processes_drain_one_outbox_each_message_once(
    postgres_url: str, server: FakeSmtpServer, tmp_path: Path, workers: int
) -> None:
    tally = drain(postgres_url, server, tmp_path, workers=workers)
    assert tally.states == {"sent": MESSAGES}
    assert (tally.duplicates, tally.missing_sent, tally.strangers) == (0, 0, 0)
    assert len(server.messages) == MESSAGES
    assert tally.senders >= 2, "the processes did not share the work"


@pytest.mark.parametrize(("workers", "kills"), [(2, 5), (4, 10)])
def test_workers_killed_in_turn_never_send_twice(
    postgres_url: str, server: FakeSmtpServer, tmp_path: Path, workers: int, kills: int
) -> None:
    tally = drain(postgres_url, server, tmp_path, workers=workers, kills=kills, later_every=25)
    print(f"\n{workers} workers: {tally}")
    assert tally.kills == kills
    assert set(tally.by_point) == set(POINTS)
    assert (tally.duplicates, tally.missing_sent, tally.strangers) == (0, 0, 0)
    assert set(tally.states) <= {"sent", "outcome_unknown"}
    assert sum(tally.states.values()) == MESSAGES
    assert tally.unknown <= tally.kills * CONCURRENCY


def test_sigterm_while_the_database_is_slow_stops_the_worker(
    postgres_url: str, server: FakeSmtpServer, tmp_path: Path
) -> None:
    import psycopg

    enqueue(postgres_url, server, 3)
    pool = Workers(postgres_url, server, tmp_path)
    try:
        with held_back(postgres_url), psycopg.connect(postgres_url, autocommit=True) as watch:
            process = pool.start()
            wait_until(  # the worker's claim waits for our lock
                lambda: watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'mailbridge-outbox'"
                ).fetchall(),
                "the worker never waited for the lock",
            )
            process.send_signal(signal.SIGTERM)  # arrives inside the database call
            time.sleep(0.3)
        assert process.wait(20) == 0  # a handler touching the store there would hang
        assert [code for _, code in pool.reap()] == [0]
    finally:
        pool.stop()
    with Outbox.open(postgres_url) as outbox:
        assert outbox.counts().get(State.CLAIMED, 0) == 0
