"""Several transactions in flight on one asyncio connection: the tasks that share it.

Tasks queue their `Attempt`s in the core's `TransactionQueue` and wait for a
future. One driver task per busy connection writes what the core says may go
out, waits for bytes, and hands each reply to the core, which settles the
attempts strictly in order; the driver resolves their futures. A task that
queues a message while the driver waits for a reply writes it at once when
the core allows it (cross-message pipelining: the next transaction goes out
before the previous one's final reply).

Cancellation: a task cancelled before its attempt was written withdraws it (the
connection stays in use for the others). One cancelled with only its envelope
on the wire is doomed: when it becomes the oldest in flight (every earlier
message settled) the connection is closed before its message can follow, and
the messages behind it, never written, are "not sent" and go again on a new
connection. One cancelled after its message bytes went out stays on the wire
while other tasks use the connection (its reply is still read, so later replies
stay in step; the pool closes a connection nobody uses any more before it is
settled); its `CancelledError` carries a `DeliveryOutcomeUnknown` as `__cause__`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from .. import diagnostics
from ..errors import DeliveryError
from ._core import Attempt, ReplyReader, Stage, TransactionQueue

if TYPE_CHECKING:
    from .._results import Transaction
    from ..settings import SmtpSettings

__all__ = ["BROKEN_READ_TIMEOUT", "AsyncPipeline"]

BROKEN_READ_TIMEOUT = 5.0  # seconds per reply once a write has failed


class Link(Protocol):
    """What the pipeline needs of its connection (`AsyncSmtpConnection`)."""

    settings: SmtpSettings
    reader: ReplyReader

    @property
    def pipelining(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    @property
    def is_open(self) -> bool: ...

    async def drain(self, timeout: float) -> None: ...

    async def receive(self, what: str, timeout: float, deadline: float) -> None: ...

    def close(self) -> None: ...


class AsyncPipeline:
    """The attempts queued and in flight on one connection, and the task driving it."""

    def __init__(self, connection: Link) -> None:
        self.connection = connection
        self.queue = TransactionQueue(connection.reader, pipelining=False)
        self._waiters: dict[Attempt, asyncio.Future[None]] = {}
        self._doomed: set[Attempt] = set()
        self._driver: asyncio.Task[None] | None = None
        self._waiting_for: tuple[int, float] | None = None  # (replies read, deadline)

    async def run(self, attempt: Attempt) -> Transaction:
        """Queue `attempt`, have it driven, return its result (or raise its error)."""
        queue = self.queue
        if queue.broken is not None:
            raise diagnostics.not_sent(queue.broken)
        queue.pipelining = self.connection.pipelining
        future = asyncio.get_running_loop().create_future()
        self._waiters[attempt] = future
        queue.enqueue(attempt)
        if self._driver is None:
            self._driver = asyncio.create_task(self._drive())
        else:  # the driver waits for a reply: this one may go out now
            try:
                self._write_ahead()
            except DeliveryError as exc:  # the session is out of step
                self._fail(exc, interrupted=False)
        try:
            await future
        except asyncio.CancelledError as cancelled:
            self._waiters.pop(attempt, None)
            self._abandon(attempt, cancelled)
            raise
        return attempt.outcome()

    def _abandon(self, attempt: Attempt, cancelled: asyncio.CancelledError) -> None:
        if self.queue.withdraw(attempt):
            return  # never written: as if never sent
        if attempt.data_started:
            cancelled.__cause__ = diagnostics.outcome_unknown(diagnostics.interrupted())
        elif attempt.stage is not Stage.DONE:
            self._doomed.add(attempt)  # the driver ends the connection before its message
            self._close_if_doomed()

    def connection_closed(self, cause: DeliveryError) -> None:
        """The connection was closed: settle whatever is left by how far it got."""
        if not self.queue.settled:
            self._settle(self.queue.fail(cause, interrupted=True))

    # -- driving ----------------------------------------------------------------

    async def _drive(self) -> None:
        queue = self.queue
        try:
            while True:
                self._process()
                self._write_ahead()
                if queue.settled:
                    return
                if not queue.in_flight and not queue.owes_reply:
                    if queue.broken is not None:
                        raise queue.broken  # what is left was never written
                    raise RuntimeError("an attempt was lost from the pipeline")  # a bug
                what, timeout, deadline = self._deadline()
                await self.connection.drain(timeout)
                await self.connection.receive(what, timeout, deadline)
        except DeliveryError as exc:
            self._fail(exc, interrupted=False)
        except asyncio.CancelledError:
            self._fail(diagnostics.interrupted(), interrupted=True)
            raise
        except BaseException as exc:  # a bug: not disguised, every waiter gets it
            self._fail(diagnostics.interrupted(), interrupted=True)
            for future in self._waiters.values():
                if not future.done():
                    future.set_exception(exc)
            self._waiters.clear()
        finally:
            self._driver = None

    def _deadline(self) -> tuple[str, float, float]:
        """What is awaited, its time-out and the deadline (loop time) for the next reply."""
        queue, settings = self.queue, self.connection.settings
        what, message = queue.awaiting()
        timeout = settings.data_timeout if message else settings.command_timeout
        if queue.broken is not None:
            timeout = min(timeout, BROKEN_READ_TIMEOUT)
        now = asyncio.get_running_loop().time()
        if self._waiting_for is None or self._waiting_for[0] != queue.replies_read:
            self._waiting_for = (queue.replies_read, now + timeout)
        return what, timeout, self._waiting_for[1]

    def _process(self) -> None:
        """Hand every complete reply to the core, one at a time; wake the settled."""
        queue, reader = self.queue, self.connection.reader
        while reader.buffered and not queue.settled:
            if self._doomed and self._close_if_doomed():
                return
            reply = reader.next_reply()
            if reply is None:
                return
            self._settle(queue.handle_reply(reply))

    def _write_ahead(self) -> None:
        """Write everything the core says may go out now (asyncio buffers it).

        Raises `ConnectError` when the server sent replies nobody asked for."""
        queue = self.queue
        if not self.connection.is_open:
            # Closed by a failure met after this message joined: take nothing from the
            # core, so that it counts as never written (and goes again elsewhere).
            queue.write_failed(diagnostics.closed_before_writing())
            return
        outgoing = queue.data_to_send()
        if outgoing.data:
            try:
                self.connection.write(outgoing.data)
            except DeliveryError as exc:
                queue.write_failed(exc)

    def _close_if_doomed(self) -> bool:
        """The oldest attempt in flight was cancelled before its message went out: end
        the connection now, so that the message never follows its envelope."""
        in_flight = self.queue.in_flight
        if not in_flight or in_flight[0] not in self._doomed or in_flight[0].data_started:
            return False
        self._fail(diagnostics.cancelled(), interrupted=True)
        return True

    def _fail(self, cause: DeliveryError, *, interrupted: bool) -> None:
        self._settle(self.queue.fail(cause, interrupted=interrupted))
        self._doomed.clear()
        self.connection.close()

    def _settle(self, settled: list[Attempt]) -> None:
        waiters = self._waiters
        for attempt in settled:
            future = waiters.pop(attempt, None)
            if future is not None and not future.done():
                future.set_result(None)
            self._doomed.discard(attempt)
