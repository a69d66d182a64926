"""Several transactions in flight on one connection: the threads that share it (sync I/O).

Threads that share a connection queue their `Attempt`s in the core's
`TransactionQueue`. One of them at a time drives the connection: it writes
what the core says may go out (the next transactions' commands before the
previous one's final reply), reads, and feeds the bytes to the core, which
matches every reply to its attempt strictly in order and settles them. When
its own attempt is done it stops driving and a waiting thread takes over, so
every thread returns as soon as its own message is settled. What may be
written ahead (RFC 2920, RFC 3030) is the core's decision (`_core/_pipeline.py`).

A thread interrupted while its message is on the wire (KeyboardInterrupt, a
task time limit) ends the connection: nobody would be left to read its
replies, and they must never be taken for another message's.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Protocol

from .. import diagnostics
from ..errors import DeliveryError
from ._core import Attempt, ReplyReader, Stage, TransactionQueue
from .wire import timed_out

if TYPE_CHECKING:
    from .._results import Transaction
    from ..reply import SmtpReply
    from ..settings import SmtpSettings
    from .wire import Channel

__all__ = ["Link", "Pipeline"]


class Link(Protocol):
    """What the pipeline needs of its connection (`SmtpConnection`), without importing it."""

    settings: SmtpSettings
    reader: ReplyReader
    shareable: bool

    @property
    def pipelining(self) -> bool: ...

    @property
    def channel(self) -> Channel: ...

    @property
    def is_open(self) -> bool: ...

    def read_reply(self, what: str, timeout: float | None = None) -> SmtpReply: ...

    def write_bytes(
        self, data: bytes, timeout: float | None = None, *, keep_open: bool = False
    ) -> None: ...

    def shutdown(self) -> None: ...

    def close(self) -> None: ...


BROKEN_READ_TIMEOUT = 5.0  # seconds per reply once a write has failed


class Pipeline:
    """The attempts queued and in flight on one connection, and who drives it."""

    def __init__(self, connection: Link) -> None:
        self.connection = connection
        self.core = TransactionQueue(connection.reader, pipelining=False)
        self._changed = threading.Condition()
        self._driving = False
        # Joiners nudge a driver that waits for a reply, so their messages go out at once.
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._waiting_for: tuple[int, float] | None = None  # (replies read, deadline)

    @property
    def settled(self) -> bool:
        """True when nothing is queued, in flight or being driven."""
        with self._changed:
            return self.core.settled and not self._driving

    def close(self) -> None:
        """Release the wake-up socket pair (the connection is closing)."""
        with self._changed:
            for sock in (self._wake_reader, self._wake_writer):
                if sock is not None:
                    sock.close()
            self._wake_reader = self._wake_writer = None

    def run(self, attempt: Attempt) -> Transaction:
        """Queue `attempt`, drive the connection when it is this thread's turn; its result."""
        driving = False
        try:
            with self._changed:
                self.core.pipelining = self.connection.pipelining
                self.core.enqueue(attempt)
                if self._driving and self._wake_writer is not None:
                    with contextlib.suppress(OSError):  # full (already woken) or closed
                        self._wake_writer.send(b"!")
                while self._driving and not _done(attempt):
                    self._changed.wait()
                if not _done(attempt):  # else settled by another thread's driving
                    driving = True
                    self._driving = True
            if driving:
                self._drive(attempt)
        except DeliveryError as exc:  # only _drive raises these
            self._fail_all(exc)
        except BaseException as exc:
            if driving:
                # Interrupted mid-transaction (a task time limit, KeyboardInterrupt, a
                # bug): unread replies would be taken for the next message's.
                self._fail_all(diagnostics.interrupted(), interrupted=exc)
            else:
                self._abandon(attempt)
            raise
        finally:
            if driving:
                broken = self.core.broken
                if broken is not None and not self.core.in_flight:
                    self._fail_all(broken)  # settled by replies: never reuse it
                with self._changed:
                    self._driving = False
                    self._changed.notify_all()
        return attempt.outcome()

    def _abandon(self, attempt: Attempt) -> None:
        """A waiting thread was interrupted: withdraw its message, or end the connection."""
        with self._changed:
            # Not written yet: withdrawn, as if never sent. On the wire already: the
            # driver's next read or write fails, and it settles every attempt by how
            # far it got (shutdown() is safe while another thread reads or writes).
            if not self.core.withdraw(attempt) and not _done(attempt):
                self.connection.shutdown()

    # -- driving (one thread at a time) ------------------------------------------

    def _drive(self, mine: Attempt) -> None:
        core = self.core
        while not _done(mine) or core.owes_reply:
            self._write_ahead()
            if _done(mine) and not core.owes_reply:
                self._settle_buffered()
                return
            if not core.in_flight and not core.owes_reply:
                if core.broken is not None:
                    raise core.broken  # what is left was never written
                raise RuntimeError("an attempt was lost from the pipeline")  # a bug
            if not self._reply_comes_first():
                continue  # a message was queued meanwhile: write it before waiting on
            self._read()

    def _settle_buffered(self) -> None:
        """Settle the attempts whose replies have arrived already, before handing over:
        their threads go on at once instead of waiting for the next driver to read them."""
        while settled := self.core.process():
            with self._changed:
                self._changed.notify_all()
            del settled

    def _timeout(self) -> tuple[str, float, float]:
        """What is awaited, its time-out and the deadline for the next reply.

        However often joiners wake the driver, the wait for one reply ends at
        one deadline (the command or data time-out); after a failed write only
        replies already on their way are worth waiting for.
        """
        core, settings = self.core, self.connection.settings
        what, message = core.awaiting()
        timeout = settings.data_timeout if message else settings.command_timeout
        if core.broken is not None:
            timeout = min(timeout, BROKEN_READ_TIMEOUT)
        now = time.monotonic()
        if self._waiting_for is None or self._waiting_for[0] != core.replies_read:
            self._waiting_for = (core.replies_read, now + timeout)
        return what, timeout, self._waiting_for[1]

    def _read(self) -> None:
        """Read what arrives and let the core settle attempts; wake their threads."""
        core = self.core
        what, timeout, _ = self._timeout()
        settled = core.handle_reply(self.connection.read_reply(what, timeout))
        if settled:
            with self._changed:
                self._changed.notify_all()

    def _reply_comes_first(self) -> bool:
        """Wait for the next reply; False when a queued message may be written first."""
        core = self.core
        if core.writes_wait_for_reply:
            return True  # joiners could not be written before this reply anyway: just read
        what, timeout, deadline = self._timeout()
        remaining = deadline - time.monotonic()
        with self._changed:
            if core.may_write:
                return False
            if not self.connection.shareable:
                return True  # nobody else uses this connection: just read
            if self._wake_reader is None:
                try:
                    self._wake_reader, self._wake_writer = socket.socketpair()
                except OSError:  # out of descriptors: read without watching for joiners
                    return True
                self._wake_reader.setblocking(False)
                self._wake_writer.setblocking(False)
            wake = self._wake_reader
        if remaining <= 0:
            raise timed_out(what, timeout)
        readable = self.connection.channel.wait_readable(wake, remaining)
        if readable is None:
            raise timed_out(what, timeout)
        if not readable:
            # Woken by a joiner (or by a stale nudge for a message written meanwhile):
            # never fall through to a blocking read here, which would not notice the
            # next joiner for a whole round trip. The caller writes what may go out
            # and waits again, on both.
            with contextlib.suppress(OSError):
                while wake.recv(4096):
                    pass
            return False
        return True

    def _write_ahead(self) -> None:
        """Write everything the core says may go out now."""
        core = self.core
        connection = self.connection
        while True:
            with self._changed:
                if not connection.is_open:
                    # Closed by a failure another thread met (a 421) after this message
                    # joined: take nothing from the core, so it counts as never written.
                    core.write_failed(diagnostics.closed_before_writing())
                    return
                outgoing = core.data_to_send()
            if not outgoing.data:
                return
            settings = connection.settings
            timeout = settings.data_timeout if outgoing.message else settings.command_timeout
            try:
                connection.write_bytes(outgoing.data, timeout, keep_open=True)
            except DeliveryError as exc:
                core.write_failed(exc)
                return
            if not core.may_write:
                return  # a joiner queued from now on wakes the driver before it waits

    def _fail_all(self, cause: DeliveryError, interrupted: BaseException | None = None) -> None:
        """The connection failed: the core settles every attempt by how far it got."""
        self.connection.close()
        with self._changed:
            self.core.fail(cause, interrupted=interrupted is not None)
            self._changed.notify_all()


def _done(attempt: Attempt) -> bool:
    return attempt.stage is Stage.DONE
