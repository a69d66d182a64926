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
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING

from .. import diagnostics
from ..diagnosis import Category, Diagnosis
from ..errors import ConnectError, DeliveryError
from .transaction import (
    Attempt,
    Stage,
    check_not_closing,
    not_sent,
    outcome_unknown,
    run_lockstep,
)
from .wire import timed_out

if TYPE_CHECKING:
    from ..reply import SmtpReply
    from .connection import SmtpConnection, Transaction

__all__ = ["Pipeline"]


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

    def close(self) -> None:
        """Release the wake-up socket pair (the connection is closing)."""
        with self._changed:
            for sock in (self._wake_reader, self._wake_writer):
                if sock is not None:
                    sock.close()
            self._wake_reader = self._wake_writer = None

    def _wake_driver(self) -> None:
        """Under the lock: tell a driver waiting for a reply that a message was queued."""
        if self._wake_writer is not None:
            with contextlib.suppress(OSError):  # full (already woken) or closed
                self._wake_writer.send(b"!")

    def run(self, attempt: Attempt) -> Transaction:
        """Queue `attempt`, drive the connection when it is this thread's turn; its result."""
        with self._changed:
            self._queued.append(attempt)
            if self._driving:
                self._wake_driver()
            try:
                while self._driving and attempt.stage is not Stage.DONE:
                    self._changed.wait()
            except BaseException:  # interrupted while waiting: withdraw what was not written
                if attempt in self._queued:
                    self._queued.remove(attempt)
                raise
            if attempt.stage is Stage.DONE:
                return attempt.outcome()
            self._driving = True
        try:
            self._drive(attempt)
        except DeliveryError as exc:
            self._fail_all(exc)
        except BaseException as exc:
            # Interrupted mid-transaction (a task time limit, KeyboardInterrupt, a bug):
            # unread replies would be taken for the next message's, so the session ends.
            self._fail_all(_interrupted(), interrupted=exc)
            raise
        finally:
            with self._changed:
                self._driving = False
                self._changed.notify_all()
        return attempt.outcome()

    # -- driving (one thread at a time) ------------------------------------------

    def _drive(self, mine: Attempt) -> None:
        while mine.stage is not Stage.DONE:
            self._write_ahead()
            if _done(mine):  # sent one command at a time
                return
            oldest = self._in_flight[0]
            envelope = oldest.stage is Stage.ENVELOPE_SENT
            settings = self.connection.settings
            timeout = settings.command_timeout if envelope else settings.data_timeout
            if not self._reply_comes_first(timeout):
                continue  # a message was queued meanwhile: write it before waiting on
            if envelope:
                self._read_envelope(oldest)
            else:
                self._read_final(oldest)

    def _joiner_waiting(self) -> bool:
        with self._changed:
            return bool(self._queued) and self._may_write()

    def _reply_comes_first(self, timeout: float) -> bool:
        """Wait for the next reply; False when a queued message may be written first."""
        connection = self.connection
        if not connection.pipelining:
            return True
        with self._changed:
            if self._queued and self._may_write():
                return False
            if self._wake_reader is None:
                self._wake_reader, self._wake_writer = socket.socketpair()
                self._wake_reader.setblocking(False)
                self._wake_writer.setblocking(False)
            wake = self._wake_reader
        readable = connection.channel.wait_readable(wake, timeout)
        if readable is None:
            raise timed_out("the server's reply", timeout)
        if not readable:
            with contextlib.suppress(OSError):
                while wake.recv(4096):
                    pass
            return not self._joiner_waiting()
        return True

    def _may_write(self) -> bool:
        if not self._in_flight:
            return True
        # DATA must end its group: nothing more until its 354 has come and the message gone.
        return self._in_flight[-1].stage is not Stage.ENVELOPE_SENT

    def _write_ahead(self) -> None:
        connection = self.connection
        while True:
            with self._changed:
                if not self._queued or not self._may_write():
                    return
                attempt = self._queued.popleft()
            if not connection.pipelining:
                attempt.reset = connection.needs_reset
                self._in_flight.append(attempt)
                run_lockstep(connection, attempt)
                self._settle(attempt)
                return
            # An unanswered BDAT transaction may still be open on the server (its recipients
            # all refused): RSET makes this one independent of how that one ends. A message
            # sent after DATA's 354 always ends its transaction, answered either way.
            attempt.reset = connection.needs_reset or any(a.chunked for a in self._in_flight)
            self._in_flight.append(attempt)  # from here on, a failure settles it
            if len(self._in_flight) == 1:
                connection.check_in_step()
            if attempt.chunked:
                # The whole message goes out with the envelope, and a pipelining server may
                # hold every reply until it has queued it: from here on a lost or late reply
                # means the message may have been delivered, and nothing is retried.
                attempt.data_started = True
                attempt.stage = Stage.MESSAGE_SENT
                connection.write_bytes(attempt.head_bytes(), connection.settings.data_timeout)
            else:
                attempt.stage = Stage.ENVELOPE_SENT
                connection.write_bytes(attempt.head_bytes())

    def _read_envelope(self, attempt: Attempt) -> None:
        """The replies to [RSET,] MAIL, RCPT and DATA; then the message, or the attempt ends."""
        connection = self.connection
        replies = self._read_replies(attempt, connection.settings.command_timeout)
        refusal = attempt.judge_envelope(replies[:-1])
        data_reply = replies[-1]
        if refusal is None and data_reply.code != 354:
            refusal = diagnostics.data_refused(data_reply)
        if refusal is not None:
            if data_reply.code == 354:  # the envelope failed but DATA went on: end it empty
                connection.write_bytes(b".\r\n")
                connection.read_reply("the reply to an aborted message")
            attempt.finish(error=refusal)
            self._settle(attempt)
            return
        attempt.data_started = True
        attempt.stage = Stage.MESSAGE_SENT
        connection.write_bytes(attempt.payload, connection.settings.data_timeout)

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
            attempt.judge_final(connection.read_reply("the reply to the message", timeout))
        self._settle(attempt)

    def _read_replies(self, attempt: Attempt, timeout: float) -> list[SmtpReply]:
        """One reply per command of the attempt's first write, without RSET's; a 421 raises."""
        replies = [
            check_not_closing(
                self.connection.read_reply(f"the reply to {line.split(':')[0]}", timeout)
            )
            for line in attempt.head_commands
        ]
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
        the server had explicitly closed the session (421) before answering it;
        every other attempt was not delivered and may be sent again.
        """
        self.connection.close()
        refused_by_server = cause.reply is not None and cause.reply.closes_connection
        with self._changed:
            everyone = [*self._in_flight, *self._queued]
            self._in_flight.clear()
            self._queued.clear()
            for position, attempt in enumerate(everyone):
                if attempt.stage is Stage.DONE:
                    continue
                if attempt.data_started and (interrupted is not None or not refused_by_server):
                    attempt.finish(error=outcome_unknown(cause))
                elif position == 0 and interrupted is None:
                    attempt.finish(error=cause)
                else:
                    # Never read by a server that had closed the session: safe to send again.
                    attempt.data_started = False
                    attempt.finish(error=not_sent(cause))
            self._changed.notify_all()


def _done(attempt: Attempt) -> bool:
    return attempt.stage is Stage.DONE


def _interrupted() -> ConnectError:
    return ConnectError(
        "the connection was closed because the thread driving it was interrupted",
        diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was interrupted."),
        temporary=True,
    )
