"""The outbox on Celery: a ``deliver(message_id)`` task on your app, and the ``dispatch`` for it.

    tasks = register(app, "postgresql://…/outbox", resolve_client)
    outbox.enqueue(tenant, email, dispatch=tasks.dispatch)

The outbox's state, not Celery, decides whether a message is sent: the task claims the message
in the database (``Outbox.deliver``), so a task that Celery runs twice (a duplicate dispatch, a
redelivery after Redis's visibility timeout, a worker lost with ``acks_late``) sends nothing
the second time. Needs the ``celery`` extra.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .._distribution import install_hint
from ..errors import ConfigurationError
from ._outbox import DEFAULT_LEASE, Outbox
from ._sending import ResolveClient
from ._status import MessageStatus
from ._store import State

try:
    from celery import Celery
except ImportError as exc:  # pragma: no cover (the extra is installed for the tests)
    raise ImportError(
        f"mailbridge.outbox.celery needs the celery extra: {install_hint('celery')}"
    ) from exc

__all__ = [
    "DEFAULT_MAX_COUNTDOWN",
    "DEFAULT_SWEEP_AFTER",
    "DEFAULT_SWEEP_NAME",
    "DEFAULT_TASK_NAME",
    "OutboxTasks",
    "register",
]

DEFAULT_TASK_NAME = "mailbridge.outbox.deliver"
DEFAULT_SWEEP_NAME = "mailbridge.outbox.sweep"
DEFAULT_SWEEP_AFTER = 300.0  # seconds a message may be due with nobody on it before a sweep acts
DEFAULT_MAX_COUNTDOWN = 600.0  # seconds; below Redis's default visibility timeout (3600)
_SWEEP_PAGE = 500
_FINAL = frozenset({State.SENT, State.FAILED, State.OUTCOME_UNKNOWN, State.PARKED, State.CANCELLED})
_MIN_DELAY = 0.5  # seconds: never schedule a check sooner (clock skew between machines)

log = logging.getLogger(__name__)


class OutboxTasks:
    """The outbox's tasks on one Celery app; made by `register()`.

    `deliver` is the Celery task (``deliver.delay(message_id)``); `dispatch` is what
    `Outbox.enqueue(..., dispatch=...)` takes. `sweep_task` is the safety net to schedule
    with Celery beat (see `sweep`). `outbox()` is this process's `Outbox`, opened on first
    use (after Celery's prefork pool forked: a database connection is never shared between
    processes).
    """

    def __init__(
        self,
        app: Any,
        outbox: str | Callable[[], Outbox],
        resolve_client: ResolveClient,
        *,
        name: str,
        sweep_name: str,
        lease: float,
        sweep_after: float,
        max_countdown: float,
        queue: str | None,
    ) -> None:
        self.app = app
        self.name = name
        self.lease = lease
        self.sweep_after = sweep_after
        self.max_countdown = max_countdown
        self.queue = queue
        self._open: Callable[[], Outbox] = (
            (lambda: Outbox.open(outbox)) if isinstance(outbox, str) else outbox
        )
        self._resolve_client = resolve_client
        self._lock = threading.Lock()
        self._outbox: Outbox | None = None
        self._pid = 0

        # Late acknowledgement: the broker keeps the message until the task returned, so a
        # worker that dies mid-task (SIGKILL, OOM, power) does not lose it. reject_on_worker_lost
        # requeues it also when only the pool process died (Celery acknowledges it otherwise).
        # Both may run the task again: the claim in the database makes that harmless.
        def deliver(task: Any, message_id: str) -> str:
            return self._task(task, message_id)

        self.deliver: Any = app.task(
            name=name,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,  # the outbox keeps the outcome: status(id)
            serializer="json",  # the one argument is the outbox id: no pickle
        )(deliver)

        def sweep(older_than: float | None = None) -> int:
            return self.sweep(older_than=older_than)

        self.sweep_task: Any = app.task(name=sweep_name, ignore_result=True, serializer="json")(
            sweep
        )

    def __repr__(self) -> str:
        return f"<OutboxTasks {self.name!r} lease={self.lease}s>"

    def dispatch(self, message_id: str) -> None:
        """Send the deliver task for ``message_id`` (give this to ``Outbox.enqueue``)."""
        self.deliver.apply_async((message_id,), queue=self.queue)

    def outbox(self) -> Outbox:
        """This process's `Outbox` (opened again in a forked child)."""
        with self._lock:
            if self._outbox is None or self._pid != os.getpid():
                self._outbox = self._open()  # a parent's connection is left alone, not closed
                self._pid = os.getpid()
            return self._outbox

    def run(self, message_id: str) -> MessageStatus | None:
        """What the task does, without Celery: deliver the message if it is due and free.

        Returns its status afterwards, or None when the outbox has no such message (purged,
        or a message of another outbox): nothing to do.
        """
        outbox = self.outbox()
        if outbox.store.get(message_id) is None:
            log.warning("outbox message %s does not exist: nothing to deliver", message_id)
            return None
        return outbox.deliver(message_id, self._resolve_client, lease=self.lease)

    def next_check(
        self, status: MessageStatus | None, now: dt.datetime | None = None
    ) -> float | None:
        """Seconds until the task must run again for this status; None once nothing is left.

        A message waiting for its time (backoff, a provider's limit) is checked when it is due;
        one that another run holds (a duplicate task, or a worker that died) is checked when that
        run's lease ends: if the holder died, that check settles the message. Never later than
        ``max_countdown``: Redis hands a task held longer than its visibility timeout to
        another worker as well, and a long wait is cheaper as a chain of short ones.
        """
        if status is None or status.state in _FINAL:
            return None
        now = now or dt.datetime.now(dt.UTC)
        if status.state is State.QUEUED:
            wait = (status.not_before - now).total_seconds()
        else:  # claimed by another run: at the latest its lease ends then
            wait = self.lease
        return min(self.max_countdown, max(_MIN_DELAY, wait))

    def sweep(self, *, older_than: float | None = None, limit: int = 1000) -> int:
        """Dispatch the deliver task again for messages nobody is working on; how many.

        Those are messages due (``queued``, ``not_before`` passed) or with an expired lease
        (``claimed`` by a run that died) for longer than ``older_than`` seconds (default: the
        ``sweep_after`` given to `register`). Their task was lost: the application died
        between commit and dispatch, or the broker lost it (Redis hands a message to a worker
        by popping it: a worker killed at that moment takes it along). Schedule `sweep_task`
        with Celery beat; a message whose task was only late is delivered once all the same.
        """
        if older_than is None:
            older_than = self.sweep_after
        if isinstance(older_than, bool) or not isinstance(older_than, int | float):
            raise TypeError(f"older_than must be seconds, not {type(older_than).__name__}")
        cutoff = time.time() - max(0.0, older_than)
        store = self.outbox().store
        found: list[str] = []
        for state in (State.QUEUED, State.CLAIMED):
            offset = 0
            while len(found) < limit:
                rows = store.rows(state=state, limit=_SWEEP_PAGE, offset=offset)
                for row in rows:
                    due = row.not_before if state is State.QUEUED else row.lease_expires
                    if due is not None and due <= cutoff:
                        found.append(row.id)
                if len(rows) < _SWEEP_PAGE:
                    break
                offset += len(rows)
        for message_id in found[:limit]:
            self.dispatch(message_id)
        if found:
            log.warning("outbox sweep: dispatched %d message(s) again", len(found[:limit]))
        return len(found[:limit])

    def _task(self, task: Any, message_id: str) -> str:
        if not isinstance(message_id, str):
            raise TypeError(f"deliver() takes an outbox id (str), not {type(message_id).__name__}")
        status = self.run(message_id)
        delay = self.next_check(status)
        if delay is not None and not task.request.is_eager:
            # A new message for later, then this one is acknowledged. The outbox keeps the
            # attempts and the deadline; Celery only wakes the message up.
            task.apply_async((message_id,), countdown=delay, queue=self.queue)
        return "missing" if status is None else status.state.value


def register(
    app: Any,
    outbox: str | Callable[[], Outbox],
    resolve_client: ResolveClient,
    *,
    name: str = DEFAULT_TASK_NAME,
    sweep_name: str = DEFAULT_SWEEP_NAME,
    lease: float = DEFAULT_LEASE,
    sweep_after: float = DEFAULT_SWEEP_AFTER,
    max_countdown: float = DEFAULT_MAX_COUNTDOWN,
    queue: str | None = None,
) -> OutboxTasks:
    """Register the outbox's ``deliver(message_id)`` task on the Celery ``app``.

    ``outbox`` is the outbox's URL (``postgresql://…``, ``sqlite:///…``) or a function that
    opens it; ``resolve_client(tenant)`` builds a tenant's `DeliveryClient` (cache them: the
    task does not close them). ``lease`` bounds how long a worker that died keeps a message
    from the others (seconds); ``sweep_after`` is how long a message may wait with nobody on it
    before the sweep task dispatches it again; ``max_countdown`` is the longest the task
    schedules itself ahead (keep it below the broker's visibility timeout); ``queue`` routes
    both tasks. Call it in the module that defines your tasks, so that workers import it.
    """
    if not isinstance(app, Celery):
        raise ConfigurationError("app", "must be a celery.Celery application")
    if not callable(resolve_client):
        raise ConfigurationError("resolve_client", "must be a function tenant -> DeliveryClient")
    if not isinstance(outbox, str) and not callable(outbox):
        raise ConfigurationError("outbox", "must be an outbox URL or a function that opens it")
    for field, value in (
        ("lease", lease),
        ("sweep_after", sweep_after),
        ("max_countdown", max_countdown),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 86400:
            raise ConfigurationError(field, "must be between 1 and 86400 seconds")
    return OutboxTasks(
        app, outbox, resolve_client, name=name, sweep_name=sweep_name, lease=float(lease),
        sweep_after=float(sweep_after), max_countdown=float(max_countdown), queue=queue,
    )  # fmt: skip
