"""`Worker`: drains an outbox through each tenant's `DeliveryClient`, many messages at once."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs

from ..errors import ConfigurationError, OutboxError
from ..smtp.pool import DEFAULT_CONCURRENCY
from ._sending import Backoff, Leases, ResolveClient, Sender
from ._store import Claimed, Outcome, State

if TYPE_CHECKING:
    from .._client import DeliveryClient
    from ._outbox import Outbox

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("mailbridge.outbox")
IDLE_WAIT = 1.0  # longest sleep between looks for due messages when nothing wakes us
DB_RETRY_PAUSE = 0.2  # seconds between attempts while the database fails (for up to a lease)


@attrs.define
class WorkerStats:
    """What a worker's `run()` did: messages per outcome."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    unknown: int = 0
    parked: int = 0

    @property
    def total(self) -> int:
        """Messages settled one way or another (a retry counts each attempt)."""
        return self.sent + self.failed + self.retried + self.unknown + self.parked


_COUNTER = {
    State.SENT: "sent",
    State.FAILED: "failed",
    State.QUEUED: "retried",
    State.OUTCOME_UNKNOWN: "unknown",
    State.PARKED: "parked",
}


class Worker:
    """Claims due messages, sends them `concurrency` at a time, records each outcome.

    Create it with `Outbox.worker(resolve_client)`. `run()` works until `stop()`
    (or SIGTERM/SIGINT when run in the main thread): it then claims nothing more,
    finishes the messages in flight and returns. `run(until_idle=True)` returns
    once nothing is due (messages due within `linger` seconds count as due).
    Sends go through each tenant's client (its connection pool, pipelining), as
    `send_many` does; only as many messages are claimed as can be sent at once,
    so a crash leaves at most `concurrency` messages in doubt. The clients
    `resolve_client` returns stay the application's: the worker never closes them
    (cache one per tenant and close them when the application stops); one found
    closed is resolved again.
    """

    def __init__(
        self,
        outbox: Outbox,
        resolve_client: ResolveClient,
        *,
        concurrency: int | None = None,
        lease: float = 60.0,
        backoff: Backoff | None = None,
        name: str | None = None,
        on_outcome: Callable[[Claimed, State], None] | None = None,
    ) -> None:
        concurrency = DEFAULT_CONCURRENCY if concurrency is None else concurrency
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency", "must be at least 1")
        if not isinstance(lease, int | float) or not 0.1 <= lease < 86_400:
            raise ConfigurationError("lease", "must be between 0.1 seconds and a day")
        self.outbox = outbox
        self.resolve_client = resolve_client
        self.concurrency = concurrency
        self.lease = float(lease)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.on_outcome = on_outcome
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._clients: dict[str, DeliveryClient] = {}
        self._clients_lock = threading.Lock()
        self._sender = Sender(backoff or Backoff(), outbox.clock)
        self._leases = Leases(outbox.store, self.name, self.lease, outbox.clock)

    def __repr__(self) -> str:
        return f"<Worker {self.name} concurrency={self.concurrency}>"

    def stop(self) -> None:
        """Stop claiming; `run()` returns once the messages in flight are recorded."""
        self._stop.set()
        self.outbox.store.notify()

    def _count(self, claimed: Claimed, state: State) -> None:
        name = _COUNTER.get(state)
        if name is not None:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
        if self.on_outcome is not None:
            self.on_outcome(claimed, state)

    def _client(self, tenant: str) -> DeliveryClient:
        """The tenant's client, resolved once per run (a failure is not remembered).

        A client closed since (the application replaced it) is resolved again.
        """
        with self._clients_lock:
            client = self._clients.get(tenant)
        if client is None or client.closed:
            fresh = self.resolve_client(tenant)
            with self._clients_lock:
                cached = self._clients.get(tenant)
                if cached is None or cached.closed:
                    self._clients[tenant] = cached = fresh
                client = cached
        return client

    def run(self, *, until_idle: bool = False, linger: float = 0.0) -> WorkerStats:
        """Drain the outbox until stopped (or, with `until_idle`, until nothing is due).

        The sending threads only send; this thread records the outcomes that arrived
        together in one transaction and claims as many messages as threads are free.
        """
        self._stop.clear()
        store = self.outbox.store
        clock = self.outbox.clock
        in_flight: dict[concurrent.futures.Future[Outcome], Claimed] = {}
        leases = self._leases
        renewed = time.monotonic()
        beat = min(0.5, self.lease / 3)  # leases in flight are renewed every third of a lease
        with (
            self._signals(),
            concurrent.futures.ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="outbox"
            ) as pool,
        ):
            done: dict[concurrent.futures.Future[Outcome], Claimed] = {}
            failing_since: float | None = None  # the database failing since (monotonic)
            try:
                while True:
                    try:
                        free = 0 if self._stop.is_set() else self.concurrency - len(in_flight)
                        claimed = self._exchange(done, free)  # clears `done` once recorded
                        for item in claimed:
                            leases.add(item)
                            future = pool.submit(
                                self._sender.process, item, self._client, leases.held
                            )
                            in_flight[future] = item
                        if in_flight:
                            finished, _ = concurrent.futures.wait(
                                in_flight,
                                timeout=0.05 if len(in_flight) < self.concurrency else beat,
                                return_when=concurrent.futures.FIRST_COMPLETED,
                            )
                            done.update({future: in_flight.pop(future) for future in finished})
                        elif self._stop.is_set():
                            break
                        elif not claimed:
                            due = store.next_due()
                            now = clock()
                            if until_idle and (due is None or due > now + linger):
                                break
                            wait = IDLE_WAIT if due is None else min(IDLE_WAIT, max(0.0, due - now))
                            store.wait(wait)
                        if in_flight and time.monotonic() - renewed > beat:
                            renewed = time.monotonic()
                            leases.renew([c.id for c in in_flight.values()])
                        failing_since = None
                    except OutboxError as exc:  # locked, I/O, connection lost: try again
                        failing_since = failing_since or time.monotonic()
                        if time.monotonic() - failing_since > self.lease:
                            raise  # the leases are gone by now: others settle these messages
                        log.warning("outbox: the database failed, trying again: %s", exc)
                        time.sleep(DB_RETRY_PAUSE)
            finally:
                if in_flight:
                    concurrent.futures.wait(in_flight)
                    done.update(in_flight)
                self._exchange(done, 0)
                self._forget_clients()
        return self.stats

    def _exchange(
        self, done: dict[concurrent.futures.Future[Outcome], Claimed], free: int
    ) -> list[Claimed]:
        """Record finished sends and claim up to `free` more, in one transaction.

        A bug in our own sending code surfaces here (`future.result()`), after the
        other outcomes are recorded (and no more is claimed): its message stays
        `claimed` until its lease expires and is then settled like a dead worker's.
        """
        items, outcomes, bug = [], [], None
        for future, item in done.items():
            try:
                outcomes.append(future.result())
                items.append(item)
            except Exception as exc:
                bug = bug or exc
        if bug is not None:
            free = 0
        if not outcomes and free < 1:
            done.clear()
            if bug is not None:
                raise bug
            return []
        held, claimed = self.outbox.store.exchange(
            outcomes, self.name, limit=free, lease=self.lease, now=self.outbox.clock()
        )
        done.clear()  # recorded: run()'s clean-up must not record them again
        for item, outcome, ok in zip(items, outcomes, held, strict=True):
            self._leases.discard(item.id)
            if not ok:
                log.warning("outbox: %s was taken over before its outcome was recorded", item.id)
            self._count(item, outcome.state)
        if bug is not None:
            raise bug
        return claimed

    def _forget_clients(self) -> None:
        """Drop this run's clients; they belong to the application, which closes them."""
        with self._clients_lock:
            self._clients = {}

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop the worker gracefully while `run()` is in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, frame: object) -> None:
            log.info("outbox: signal %s: finishing the messages in flight", signum)
            # The handler may run while this thread is inside a database call: waking the
            # store from here would wait for that call forever (PostgreSQL). A thread waits.
            threading.Thread(target=self.stop, name="outbox-stop", daemon=True).start()

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
