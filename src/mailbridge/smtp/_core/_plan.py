"""One mail transaction, sans I/O: its commands, and how the server's replies are judged.

The commands are built (and the message checked) before anything is written,
so a message that cannot be sent never leaves half a transaction on the wire.
Which transaction is written when, and which reply belongs to which, is
`_pipeline.py`'s job.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Sequence

import attrs

from ... import diagnostics
from ..._results import Transaction
from ...diagnosis import Category, Diagnosis
from ...errors import DeliveryError, MessageError, MessageRejected, UnsupportedByServer
from ...reply import SmtpReply
from ._dsn import dsn_mail_parameters, dsn_rcpt_parameters
from ._framing import check_command, frame_data, normalize_data

__all__ = ["Attempt", "Stage", "check_not_closing", "plan_attempt"]

log = logging.getLogger("mailbridge.smtp")
_BAD_PATH = re.compile(r"[<>\x00-\x20\x7f]")


class Stage(enum.Enum):
    """How far one attempt has got on its connection."""

    QUEUED = "queued"  # nothing written
    ENVELOPE_SENT = "envelope sent"  # MAIL, RCPT and DATA written; waiting for the 354
    MESSAGE_SENT = "message sent"  # the whole message written; waiting for the final reply
    DONE = "done"  # `result` or `error` is set


@attrs.define(eq=False)
class Attempt:
    """One message on its way through a connection.

    `chunked` attempts send envelope and message in one write (BDAT n LAST);
    the others send MAIL, RCPT and DATA, then the dot-stuffed message after
    the 354. `data_started` turns true the moment message bytes are written:
    from then on a lost reply means the message may have been delivered.
    """

    sender: str
    recipients: tuple[str, ...]
    mail: str
    payload: bytes
    chunked: bool
    stage: Stage = Stage.QUEUED
    reset: bool = False
    data_started: bool = False
    accepted: tuple[str, ...] = ()
    refused: dict[str, SmtpReply] = attrs.Factory(dict)
    result: Transaction | None = None
    error: BaseException | None = None
    head: bytes = b""  # MAIL, every RCPT and DATA or BDAT, checked and encoded once
    rcpt_lines: tuple[str, ...] = ()  # the RCPT commands with their parameters (DSN)

    def __attrs_post_init__(self) -> None:
        if not self.head:
            self.head = b"".join(check_command(line) for line in self.head_commands)

    @property
    def head_commands(self) -> list[str]:
        """The commands written together: [RSET,] MAIL, every RCPT, then DATA or BDAT."""
        last = f"BDAT {len(self.payload)} LAST" if self.chunked else "DATA"
        return [
            *(["RSET"] if self.reset else []),
            self.mail,
            *(self.rcpt_lines or (f"RCPT TO:<{recipient}>" for recipient in self.recipients)),
            last,
        ]

    def head_bytes(self) -> bytes:
        """The bytes of the first write (with the message itself when chunked)."""
        if log.isEnabledFor(logging.DEBUG):
            for line in self.head_commands:
                log.debug("C: %s", line)
        wire = b"RSET\r\n" + self.head if self.reset else self.head
        return wire + self.payload if self.chunked else wire

    def finish(self, result: Transaction | None = None, error: BaseException | None = None) -> None:
        """Record the outcome; the attempt is done."""
        self.result, self.error, self.stage = result, error, Stage.DONE

    def outcome(self) -> Transaction:
        """The transaction, or the error it met raised."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def envelope_failed(self, replies: Sequence[SmtpReply]) -> bool:
        """True once the replies so far (RSET's dropped) show MAIL or every RCPT failed."""
        if replies and not _ok(replies[0]):
            return True
        rcpt_replies = replies[1 : 1 + len(self.recipients)]
        return len(rcpt_replies) == len(self.recipients) and not any(map(_ok, rcpt_replies))

    def judge_envelope(self, replies: Sequence[SmtpReply]) -> DeliveryError | None:
        """Check the replies to MAIL and RCPT (RSET's already dropped); None when sending may go on.

        Records who was accepted and refused. A 421 anywhere raises: the server
        is closing the connection.
        """
        for reply in replies:
            check_not_closing(reply)
        mail_reply, rcpt_replies = replies[0], replies[1 : 1 + len(self.recipients)]
        self.accepted = tuple(
            r for r, reply in zip(self.recipients, rcpt_replies, strict=False) if _ok(reply)
        )
        self.refused = {
            r: reply
            for r, reply in zip(self.recipients, rcpt_replies, strict=False)
            if not _ok(reply)
        }
        if not _ok(mail_reply):
            return diagnostics.sender_refused(mail_reply, self.sender)
        if not self.accepted:
            return diagnostics.recipients_refused(self.refused)
        return None

    def judge_final(self, final: SmtpReply) -> None:
        """Record the outcome from the reply to the end of the message (or to BDAT LAST)."""
        check_not_closing(final)
        if final.code // 100 != 2:
            self.finish(error=diagnostics.data_refused(final))
        else:
            self.finish(Transaction(accepted=self.accepted, refused=self.refused, reply=final))


def check_not_closing(reply: SmtpReply) -> SmtpReply:
    """Raise when `reply` is a 421: the server refuses and closes the session."""
    if reply.closes_connection:
        raise diagnostics.server_closed(reply)
    return reply


def _ok(reply: SmtpReply) -> bool:
    """MAIL and RCPT succeed only with 2xx (a 3xx there is a broken server)."""
    return reply.code // 100 == 2


def _check_path(field: str, address: str) -> None:
    """Refuse what could end the <path> early and smuggle ESMTP parameters (RET=, NOTIFY=)."""
    if not address or _BAD_PATH.search(address):
        raise MessageError(field, f"{address!r} cannot be used in the SMTP envelope")


def plan_attempt(
    extensions: dict[str, str],
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
    *,
    smtputf8: bool = False,
    chunking: bool = True,
    envelope_id: str | None = None,
) -> Attempt:
    """Check the message against the envelope rules and the server's extensions; build it.

    `chunking` False keeps DATA even when the server offers CHUNKING. With an
    `envelope_id` and a server offering DSN, bounces are requested (`_dsn`). Raises
    `MessageError` or `UnsupportedByServer`/`MessageRejected` (SIZE) before
    anything is written.
    """
    if not recipients:
        raise MessageError("to", "at least one recipient is needed")
    if sender:  # the null reverse-path <> is allowed (bounces)
        _check_path("sender", sender)
    lines = []
    for recipient in recipients:
        _check_path("to", recipient)
        lines.append(
            f"RCPT TO:<{recipient}>" + dsn_rcpt_parameters(extensions, envelope_id, recipient)
        )
    rcpts = [check_command(line) for line in lines]
    chunked = chunking and "CHUNKING" in extensions and "PIPELINING" in extensions
    payload = normalize_data(raw) if chunked else frame_data(raw)
    params = _mail_parameters(extensions, len(payload), raw, smtputf8)
    params += "".join(" " + p for p in dsn_mail_parameters(extensions, envelope_id))
    mail = f"MAIL FROM:<{sender}>" + params
    last = f"BDAT {len(payload)} LAST\r\n".encode() if chunked else b"DATA\r\n"
    head = b"".join([check_command(mail), *rcpts, last])
    return Attempt(
        sender, tuple(recipients), mail, payload, chunked, head=head, rcpt_lines=tuple(lines)
    )


def _mail_parameters(
    extensions: dict[str, str], framed_size: int, raw: bytes, smtputf8: bool
) -> str:
    params: list[str] = []
    if smtputf8:
        if "SMTPUTF8" not in extensions:
            raise UnsupportedByServer(
                "the message needs SMTPUTF8 (an address with non-ASCII characters before the @), "
                "which the server does not offer",
                diagnosis=Diagnosis(
                    Category.SMTPUTF8_UNSUPPORTED,
                    "This server cannot send to or from addresses with international characters "
                    "before the @.",
                    (
                        "Use an ASCII address for this recipient, "
                        "or a server that supports SMTPUTF8.",
                    ),
                ),
            )
        params.append("SMTPUTF8")
        if "8BITMIME" in extensions:
            params.append("BODY=8BITMIME")
    elif not raw.isascii():
        if "8BITMIME" not in extensions:
            raise UnsupportedByServer(
                "the message contains 8-bit data and the server does not offer 8BITMIME",
                diagnosis=Diagnosis(
                    Category.MESSAGE_REJECTED,
                    "The server only accepts 7-bit messages.",
                    ("Encode the message with quoted-printable or base64.",),
                ),
            )
        params.append("BODY=8BITMIME")
    if "SIZE" in extensions:
        limit_text = extensions["SIZE"].split(" ")[0]
        limit = int(limit_text) if limit_text.isdigit() else 0
        if limit and framed_size > limit:
            raise MessageRejected(
                f"the message is {framed_size} bytes; the server accepts at most {limit}",
                diagnosis=Diagnosis(
                    Category.MESSAGE_TOO_LARGE,
                    f"The message is too large for this server (limit {limit // 1024} KB).",
                    ("Send fewer or smaller attachments.",),
                ),
            )
        params.append(f"SIZE={framed_size}")
    return "".join(" " + param for param in params)
