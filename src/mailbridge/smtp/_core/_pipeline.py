"""Transactions on one connection, sans I/O: what to write next and whose reply is whose.

`TransactionQueue` holds the attempts queued and in flight on one connection
and a queue of the replies it expects, in order: every reply the reader
yields is matched to the attempt (and the command: RSET, MAIL, RCPT n, DATA,
BDAT, end of data) it answers, strictly in order. It decides what may be
written ahead (RFC 2920: DATA ends a group; a BDAT transaction carries its
message, so several may be in flight) and judges each attempt when its
replies are in. Servers without PIPELINING get one command at a time.

An I/O layer drives it: `enqueue()`, then `data_to_send()` and write it;
feed received bytes with `receive_data()`, call `process()` for the attempts
settled by them (and possibly more bytes to write); when it raises a
`DeliveryError` (a 421, a broken reply) or a read or write fails, call
`fail(cause)`, which settles every attempt left by how far it got.
"""

from __future__ import annotations

import copy
import enum
from collections import deque

import attrs

from ... import diagnostics
from ...diagnosis import Category, Diagnosis
from ...errors import ConnectError, DeliveryError, ProtocolError
from ...reply import SmtpReply
from ._framing import check_command
from ._plan import Attempt, Stage, check_not_closing
from ._replies import ReplyReader

__all__ = ["Outgoing", "TransactionQueue"]


class _Kind(enum.Enum):
    RSET = "RSET"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    BDAT = "BDAT"
    MESSAGE = "the message"
    ABORT = "an aborted message"


_WHAT = {kind: f"the reply to {kind.value}" for kind in _Kind}


@attrs.frozen
class Outgoing:
    """Bytes to write now; `message` says they carry message data (use the data time-out)."""

    data: bytes
    message: bool


_NOTHING = Outgoing(b"", False)


def _ok(reply: SmtpReply) -> bool:
    return reply.code // 100 == 2


class TransactionQueue:
    """The attempts queued and in flight on one connection, and the replies they await."""

    def __init__(self, reader: ReplyReader, *, pipelining: bool) -> None:
        self.reader = reader
        self.pipelining = pipelining
        self.queued: deque[Attempt] = deque()
        self.in_flight: deque[Attempt] = deque()  # in the order their replies will come
        self._expected: deque[tuple[Attempt, _Kind]] = deque()
        self._replies: dict[Attempt, list[SmtpReply]] = {}
        self._out: list[bytes] = []
        self._out_message = False
        self.needs_reset = False  # a failed transaction left state on the server: RSET first
        self.messages_sent = 0
        self.replies_read = 0
        # A write failed: nothing more is written, but replies already on their way are
        # still read (a 421 sent before the server hung up settles who was refused).
        self.broken: DeliveryError | None = None
        self._pending: DeliveryError | None = None  # met by process() after settling some

    # -- state ------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """True when nothing is queued, in flight, or owed a reply."""
        return not (self.queued or self.in_flight or self._expected)

    @property
    def owes_reply(self) -> bool:
        """True when the next reply answers an attempt already settled (an aborted DATA):
        the driver must read it before it may stop."""
        return bool(self._expected) and self._expected[0][0].stage is Stage.DONE

    @property
    def may_write(self) -> bool:
        """True when a queued attempt may be written now."""
        if not self.queued or self.broken is not None:
            return False
        if not self.in_flight:
            return True
        # DATA must end its group: nothing more until its 354 has come and the message gone.
        return self.pipelining and self.in_flight[-1].stage is not Stage.ENVELOPE_SENT

    @property
    def writes_wait_for_reply(self) -> bool:
        """True when nothing may be written, whatever is queued, until the next reply
        (a DATA waits for its 354, or one command at a time)."""
        if self.broken is not None:
            return True
        in_flight = self.in_flight
        return bool(in_flight) and (
            not self.pipelining or in_flight[-1].stage is Stage.ENVELOPE_SENT
        )

    def awaiting(self) -> tuple[str, bool]:
        """What the next reply answers (for messages) and whether the data time-out applies."""
        if not self._expected:
            return "the server's reply", False
        attempt, kind = self._expected[0]
        message = kind in (_Kind.MESSAGE, _Kind.BDAT) or attempt.stage is Stage.MESSAGE_SENT
        return _WHAT[kind], message

    # -- writing ----------------------------------------------------------------

    def enqueue(self, attempt: Attempt) -> None:
        """Queue a prepared attempt; it goes out with the next `data_to_send()` allowed."""
        self.queued.append(attempt)

    def withdraw(self, attempt: Attempt) -> bool:
        """Take back an attempt not written yet; False when it is on the wire already."""
        if attempt in self.queued:
            self.queued.remove(attempt)
            return True
        return False

    def data_to_send(self) -> Outgoing:
        """Everything that may be written now: queued attempts, then pending message data.

        Raises `ConnectError` when the server sent replies nobody asked for
        (the session is out of step); call `fail()` with it.
        """
        while self.may_write:
            attempt = self.queued.popleft()
            self.in_flight.append(attempt)  # from here on, a failure settles it
            if not self._expected and self.reader.buffered:
                raise ConnectError(
                    "the server sent unexpected data between transactions",
                    diagnosis=Diagnosis(
                        Category.CONNECTION_LOST, "The connection was out of step."
                    ),
                    temporary=True,
                )
            self._start(attempt)
        if not self._out:
            return _NOTHING
        out = Outgoing(b"".join(self._out), self._out_message)
        self._out.clear()
        self._out_message = False
        return out

    def write_failed(self, cause: DeliveryError) -> None:
        """A write failed: write nothing more; replies already sent may still be read."""
        self.broken = cause

    def _send(self, attempt: Attempt, kind: _Kind, line: str) -> None:
        self._out.append(check_command(line))
        self._expected.append((attempt, kind))

    def _start(self, attempt: Attempt) -> None:
        self._replies[attempt] = []
        if not self.pipelining:
            attempt.reset = self.needs_reset
            attempt.stage = Stage.ENVELOPE_SENT
            if attempt.reset:
                self._send(attempt, _Kind.RSET, "RSET")
            else:
                self._send(attempt, _Kind.MAIL, attempt.mail)
            return
        # An unanswered BDAT transaction may still be open on the server (its recipients
        # all refused): RSET makes this one independent of how that one ends. A message
        # sent after DATA's 354 always ends its transaction, answered either way.
        attempt.reset = self.needs_reset or any(
            a.chunked for a in self.in_flight if a is not attempt
        )
        if attempt.reset:
            self.needs_reset = False  # the RSET clears what was left open
        head = attempt.head_bytes()
        self._out.append(head)
        expected = self._expected
        if attempt.reset:
            expected.append((attempt, _Kind.RSET))
        expected.append((attempt, _Kind.MAIL))
        expected.extend((attempt, _Kind.RCPT) for _ in attempt.recipients)
        if attempt.chunked:
            # The whole message goes out with the envelope, and a pipelining server may
            # hold every reply until it has queued it: from here on a lost or late reply
            # means the message may have been delivered, and nothing is retried.
            expected.append((attempt, _Kind.BDAT))
            attempt.data_started = True
            attempt.stage = Stage.MESSAGE_SENT
            self._out_message = True
        else:
            expected.append((attempt, _Kind.DATA))
            attempt.stage = Stage.ENVELOPE_SENT

    # -- reading ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the server."""
        self.reader.feed(data)

    def process(self) -> list[Attempt]:
        """Match every complete reply received to its attempt; returns the attempts settled.

        Raises `DeliveryError` when the connection must end (a 421, a reply that
        is not SMTP); then call `fail()`. When attempts settled before the
        failing reply, they are returned and the next call raises: call it
        until it returns an empty list, and the events are the same however
        the bytes were split.
        """
        if self._pending is not None:
            raise self._pending
        settled: list[Attempt] = []
        reader = self.reader
        expected = self._expected
        try:
            while expected:
                reply = reader.next_reply()
                if reply is None:
                    break
                self.replies_read += 1
                attempt, kind = expected.popleft()
                self._answer(attempt, kind, reply, settled)
        except DeliveryError as exc:
            if not settled:
                raise
            self._pending = exc  # raised by the next call: first report who settled
        return settled

    def handle_reply(self, reply: SmtpReply) -> list[Attempt]:
        """Match one reply the I/O layer took from the reader itself; the attempts settled.

        Raises like `process()`; a reply nobody awaits is a `ProtocolError`.
        """
        if self._pending is not None:
            raise self._pending
        if not self._expected:
            raise ProtocolError(
                "the server sent a reply nobody asked for",
                diagnosis=Diagnosis(Category.PROTOCOL, "The server broke the SMTP protocol."),
            )
        settled: list[Attempt] = []
        self.replies_read += 1
        attempt, kind = self._expected.popleft()
        self._answer(attempt, kind, reply, settled)
        return settled

    def _answer(
        self, attempt: Attempt, kind: _Kind, reply: SmtpReply, settled: list[Attempt]
    ) -> None:
        if kind is _Kind.ABORT:
            check_not_closing(reply)
            return
        if kind is _Kind.MESSAGE:
            attempt.judge_final(reply)
            self._settle(attempt, settled)
            return
        replies = self._replies[attempt]
        if kind is not _Kind.RSET:
            replies.append(reply)
        if attempt.chunked and attempt.envelope_failed(replies):
            # MAIL or every RCPT failed: the server discards the BDAT data (RFC 3030),
            # so whatever happens next, the message was not taken.
            attempt.data_started = False
        check_not_closing(reply)
        if not self.pipelining:
            self._lockstep(attempt, kind, replies, settled)
        elif kind is _Kind.BDAT:
            refusal = attempt.judge_envelope(replies[:-1])
            if refusal is not None:
                attempt.finish(error=refusal)
            else:
                attempt.judge_final(reply)
            self._settle(attempt, settled)
        elif kind is _Kind.DATA:
            self._after_data(attempt, replies[:-1], reply, settled)

    def _after_data(
        self,
        attempt: Attempt,
        envelope: list[SmtpReply] | None,
        data_reply: SmtpReply,
        settled: list[Attempt],
    ) -> None:
        """After DATA's reply: the message, or the attempt ends (`envelope` None: judged)."""
        refusal = None if envelope is None else attempt.judge_envelope(envelope)
        if refusal is None and data_reply.code != 354:
            refusal = diagnostics.data_refused(data_reply)
        if refusal is not None:
            attempt.finish(error=refusal)
            self._settle(attempt, settled)
            if data_reply.code == 354 and self.broken is None:
                # The envelope failed but DATA went on: end it empty (RFC 2920 3.1).
                self._out.append(b".\r\n")
                self._expected.append((attempt, _Kind.ABORT))
            return
        if self.broken is not None:  # the message cannot follow: it was never sent
            attempt.finish(error=diagnostics.not_sent(self.broken))
            self._settle(attempt, settled)
            return
        attempt.data_started = True
        attempt.stage = Stage.MESSAGE_SENT
        self._out.append(attempt.payload)
        self._out_message = True
        self._expected.append((attempt, _Kind.MESSAGE))

    def _lockstep(
        self, attempt: Attempt, kind: _Kind, replies: list[SmtpReply], settled: list[Attempt]
    ) -> None:
        """One command at a time: the next command, or the attempt's outcome."""
        if kind is _Kind.RSET:
            self._send(attempt, _Kind.MAIL, attempt.mail)
            return
        if kind is _Kind.DATA:
            self._after_data(attempt, None, replies[-1], settled)
            return
        rcpts = len(replies) - 1
        if _ok(replies[0]) and rcpts < len(attempt.recipients):
            self._send(attempt, _Kind.RCPT, f"RCPT TO:<{attempt.recipients[rcpts]}>")
            return
        refusal = attempt.judge_envelope(replies)
        if refusal is not None:
            attempt.finish(error=refusal)
            self._settle(attempt, settled)
            return
        self._send(attempt, _Kind.DATA, "DATA")

    def _settle(self, attempt: Attempt, settled: list[Attempt]) -> None:
        self.in_flight.remove(attempt)
        del self._replies[attempt]
        if attempt.error is None:
            self.messages_sent += 1
        # Attempts settle in order: a refused one may have left its transaction open.
        self.needs_reset = attempt.error is not None
        settled.append(attempt)

    # -- failing ------------------------------------------------------------------

    def fail(self, cause: DeliveryError, *, interrupted: bool = False) -> list[Attempt]:
        """The connection failed: settle every attempt left, each by how far it got.

        An attempt whose message bytes went out gets "outcome unknown", unless
        the server had explicitly closed the session (421) without accepting it:
        a 421 answers the oldest attempt, and no later one was read. Every
        attempt not taken is marked so (`data_started` False): it may go again.
        The oldest gets `cause` itself, the others "not sent" (all of them
        "not sent" when `interrupted`). Returns the attempts settled.
        """
        refused_by_server = (
            not interrupted and cause.reply is not None and cause.reply.closes_connection
        )
        everyone = [*self.in_flight, *self.queued]
        self._pending = None
        self.in_flight.clear()
        self.queued.clear()
        self._expected.clear()
        self._replies.clear()
        self._out.clear()
        settled = []
        for position, attempt in enumerate(everyone):
            if attempt.stage is Stage.DONE:
                continue
            if refused_by_server:
                attempt.data_started = False
            if attempt.data_started:
                attempt.finish(error=diagnostics.outcome_unknown(cause))
            elif position == 0 and not interrupted:
                attempt.finish(error=copy.copy(cause))
            else:
                attempt.finish(error=diagnostics.not_sent(cause))
            settled.append(attempt)
        return settled
