"""Several transactions in flight on one connection (RFC 2920 across messages, RFC 3030).

Threads that share a connection queue their `Attempt`s here. One of them at a
time drives the connection: it writes the next transaction's commands before
reading the previous one's final reply, then reads replies strictly in order,
each matched to the attempt whose commands it answers. When its own attempt
is done it stops driving and a waiting thread takes over, so every thread
returns as soon as its own message is settled.

What may be written ahead follows RFC 2920: DATA ends a group (the message
waits for the 354), and the message itself may start a group, so with DATA
the next envelope follows the previous message and each message costs one
round trip. With BDAT the envelope and message go out together and several
messages may be in flight. A transaction written while an earlier one is
still unanswered starts with RSET, so it never depends on how the earlier one
ended. Servers without PIPELINING get one command at a time.

A thread interrupted while its message is on the wire (KeyboardInterrupt, a
task time limit) ends the connection: nobody would be left to read its
replies, and they must never be taken for another message's.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .. import diagnostics
from ..errors import DeliveryError
from .transaction import Attempt, Stage, check_not_closing, run_lockstep
from .wire import timed_out

if TYPE_CHECKING:
    from ..reply import SmtpReply
    from .connection import SmtpConnection, Transaction

__all__ = ["Pipeline"]

BROKEN_READ_TIMEOUT = 5.0  # seconds per reply once a write has failed


class Pipeline:
    """The attempts queued and in flight on one connection, and who drives it."""

    def __init__(self, connection: SmtpConnection) -> None:
        self.connection = connection
        self._changed = threading.Condition()
        self._queued: deque[Attempt] = deque()
        self._in_flight: deque[Attempt] = deque()  # in the order their replies will come
        self._driving = False
        # Joiners nudge a driver that waits for a reply, so their messages go out at once.
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._waiting_for: tuple[Attempt, Stage, float] | None = None  # reply deadline
        # A write failed: nothing more is written, but replies that already arrived
        # are still read (a 421 sent before the server hung up settles who was refused).
        self._broken: DeliveryError | None = None

    @property
    def settled(self) -> bool:
        """True when nothing is queued, in flight or being driven."""
        with self._changed:
            return not (self._queued or self._in_flight or self._driving)

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
                self._queued.append(attempt)
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
                if self._broken is not None and not self._in_flight:
                    self._fail_all(self._broken)  # settled by replies: never reuse it
                with self._changed:
                    self._driving = False
                    self._changed.notify_all()
        return attempt.outcome()

    def _abandon(self, attempt: Attempt) -> None:
        """A waiting thread was interrupted: withdraw its message, or end the connection."""
        with self._changed:
            if attempt in self._queued:
                self._queued.remove(attempt)  # never written: as if never sent
            elif not _done(attempt):
                # On the wire already: the driver's next read or write fails, and it
                # settles every attempt by how far it got. shutdown() is safe while
                # another thread is inside a read or write of this socket.
                self.connection.shutdown()

    # -- driving (one thread at a time) ------------------------------------------

    def _drive(self, mine: Attempt) -> None:
        while not _done(mine):
            self._write_ahead(mine)
            if _done(mine):  # sent one command at a time
                return
            if not self._in_flight:
                if self._broken is not None:
                    raise self._broken  # what is left was never written
                raise RuntimeError("an attempt was lost from the pipeline")  # a bug
            oldest = self._in_flight[0]
            if not self._reply_comes_first(oldest):
                continue  # a message was queued meanwhile: write it before waiting on
            if oldest.stage is Stage.ENVELOPE_SENT:
                self._read_envelope(oldest)
            else:
                self._read_final(oldest)

    def _reply_comes_first(self, oldest: Attempt) -> bool:
        """Wait for `oldest`'s next reply; False when a queued message may be written first.

        However often joiners wake it, the wait for one reply ends at one
        deadline (the command or data time-out).
        """
        connection = self.connection
        if self._broken is not None:
            return True  # only reading from here on
        settings = connection.settings
        envelope = oldest.stage is Stage.ENVELOPE_SENT
        timeout = settings.command_timeout if envelope else settings.data_timeout
        now = time.monotonic()
        if self._waiting_for is None or self._waiting_for[:2] != (oldest, oldest.stage):
            self._waiting_for = (oldest, oldest.stage, now + timeout)
        remaining = self._waiting_for[2] - now
        with self._changed:
            if self._queued and self._may_write():
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
            raise timed_out("the server's reply", timeout)
        readable = connection.channel.wait_readable(wake, remaining)
        if readable is None:
            raise timed_out("the server's reply", timeout)
        if not readable:
            with contextlib.suppress(OSError):
                while wake.recv(4096):
                    pass
            with self._changed:
                return not (self._queued and self._may_write())
        return True

    def _may_write(self) -> bool:
        if not self._in_flight:
            return True
        # DATA must end its group: nothing more until its 354 has come and the message gone.
        return self._in_flight[-1].stage is not Stage.ENVELOPE_SENT

    def _write_ahead(self, mine: Attempt) -> None:
        connection = self.connection
        while self._broken is None:
            with self._changed:
                if not self._queued or not self._may_write():
                    return
                attempt = self._queued.popleft()
                self._in_flight.append(attempt)  # from here on, a failure settles it
            if not connection.pipelining:
                # One transaction at a time, in the order they were queued.
                connection.check_in_step(quiet=True)
                attempt.reset = connection.needs_reset
                run_lockstep(connection, attempt)
                self._settle(attempt)
                if _done(mine):
                    return
                continue
            # An unanswered BDAT transaction may still be open on the server (its recipients
            # all refused): RSET makes this one independent of how that one ends. A message
            # sent after DATA's 354 always ends its transaction, answered either way.
            attempt.reset = connection.needs_reset or any(
                a.chunked for a in self._in_flight if a is not attempt
            )
            connection.check_in_step(quiet=len(self._in_flight) == 1)
            if attempt.reset:
                connection.needs_reset = False  # the RSET clears what was left open
            if attempt.chunked:
                # The whole message goes out with the envelope, and a pipelining server may
                # hold every reply until it has queued it: from here on a lost or late reply
                # means the message may have been delivered, and nothing is retried.
                attempt.data_started = True
                attempt.stage = Stage.MESSAGE_SENT
                self._write(attempt.head_bytes(), connection.settings.data_timeout)
            else:
                attempt.stage = Stage.ENVELOPE_SENT
                self._write(attempt.head_bytes(), connection.settings.command_timeout)

    def _write(self, data: bytes, timeout: float) -> None:
        try:
            self.connection.write_bytes(data, timeout, keep_open=True)
        except DeliveryError as exc:
            self._broken = exc

    def _read_envelope(self, attempt: Attempt) -> None:
        """The replies to [RSET,] MAIL, RCPT and DATA; then the message, or the attempt ends."""
        connection = self.connection
        replies = self._read_replies(attempt, connection.settings.command_timeout)
        refusal = attempt.judge_envelope(replies[:-1])
        data_reply = replies[-1]
        if refusal is None and data_reply.code != 354:
            refusal = diagnostics.data_refused(data_reply)
        if refusal is not None:
            attempt.finish(error=refusal)
            self._settle(attempt)
            if data_reply.code == 354 and self._broken is None:
                # The envelope failed but DATA went on: end it empty (RFC 2920 3.1).
                # A failure here fails the others; this one keeps its refusal.
                connection.write_bytes(b".\r\n")
                connection.read_reply("the reply to an aborted message")
            return
        if self._broken is not None:  # the message cannot follow: it was never sent
            attempt.finish(error=diagnostics.not_sent(self._broken))
            self._settle(attempt)
            return
        attempt.data_started = True
        attempt.stage = Stage.MESSAGE_SENT
        self._write(attempt.payload, connection.settings.data_timeout)

    def _read_final(self, attempt: Attempt) -> None:
        connection = self.connection
        timeout = connection.settings.data_timeout
        if attempt.chunked:
            replies = self._read_replies(attempt, timeout)
            refusal = attempt.judge_envelope(replies[:-1])
            if refusal is not None:
                attempt.finish(error=refusal)
            else:
                attempt.judge_final(replies[-1])
        else:
            final = connection.read_reply("the reply to the message", self._timeout(timeout))
            attempt.judge_final(final)
        self._settle(attempt)

    def _timeout(self, timeout: float) -> float:
        # After a failed write, only replies already on their way are worth waiting for.
        return min(timeout, BROKEN_READ_TIMEOUT) if self._broken is not None else timeout

    def _read_replies(self, attempt: Attempt, timeout: float) -> list[SmtpReply]:
        """One reply per command of the attempt's first write, without RSET's; a 421 raises."""
        replies: list[SmtpReply] = []
        for line in attempt.head_commands:
            reply = self.connection.read_reply(
                f"the reply to {line.split(':')[0]}", self._timeout(timeout)
            )
            replies.append(reply)
            envelope = replies[1:] if attempt.reset else replies
            if attempt.chunked and attempt.envelope_failed(envelope):
                # MAIL or every RCPT failed: the server discards the BDAT data (RFC 3030),
                # so whatever happens next, the message was not taken.
                attempt.data_started = False
            check_not_closing(reply)
        return replies[1:] if attempt.reset else replies

    def _settle(self, attempt: Attempt) -> None:
        """`attempt` is done: count it, let its thread go."""
        connection = self.connection
        self._in_flight.remove(attempt)
        if attempt.error is None:
            connection.messages_sent += 1
        # Attempts settle in order: a refused one may have left its transaction open.
        connection.needs_reset = attempt.error is not None
        with self._changed:
            self._changed.notify_all()

    def _fail_all(self, cause: DeliveryError, interrupted: BaseException | None = None) -> None:
        """The connection failed: settle every attempt on it, each by how far it got.

        An attempt whose message bytes went out gets "outcome unknown", unless
        the server had explicitly closed the session (421) without accepting it:
        a 421 answers the oldest attempt, and no later one was read. Every
        attempt not taken is marked so (`data_started` False): it may go again.
        """
        self.connection.close()
        refused_by_server = (
            interrupted is None and cause.reply is not None and cause.reply.closes_connection
        )
        with self._changed:
            everyone = [*self._in_flight, *self._queued]
            self._in_flight.clear()
            self._queued.clear()
            for position, attempt in enumerate(everyone):
                if attempt.stage is Stage.DONE:
                    continue
                if refused_by_server:
                    attempt.data_started = False
                if attempt.data_started:
                    attempt.finish(error=diagnostics.outcome_unknown(cause))
                elif position == 0 and interrupted is None:
                    attempt.finish(error=copy.copy(cause))
                else:
                    attempt.finish(error=diagnostics.not_sent(cause))
            self._changed.notify_all()


def _done(attempt: Attempt) -> bool:
    return attempt.stage is Stage.DONE
