"""One mail transaction: MAIL, RCPT, DATA, pipelined where the server allows (RFC 2920)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import diagnostics
from ..diagnosis import Category, Diagnosis
from ..errors import ConnectError, MessageError, MessageRejected, UnsupportedByServer
from ..reply import SmtpReply
from .wire import check_command, frame_data, normalize_data

if TYPE_CHECKING:
    from .connection import SmtpConnection, Transaction

__all__ = ["run_transaction"]

log = logging.getLogger("mailbridge.smtp")
_BAD_PATH = re.compile(r"[<>\x00-\x20\x7f]")


def _closing(reply: SmtpReply) -> ConnectError:
    return ConnectError(
        "the server closed the session",
        reply=reply,
        diagnosis=Diagnosis(
            Category.SERVER_UNAVAILABLE,
            "The server is not accepting mail right now and closed the connection.",
            ("Try again later; the server may be limiting how much is sent at once.",),
        ),
        temporary=True,
    )


def _ok(reply: SmtpReply) -> bool:
    """MAIL and RCPT succeed only with 2xx (a 3xx there is a broken server)."""
    return reply.code // 100 == 2


def _check_path(field: str, address: str) -> None:
    """Refuse what could end the <path> early and smuggle ESMTP parameters (RET=, NOTIFY=)."""
    if not address or _BAD_PATH.search(address):
        raise MessageError(field, f"{address!r} cannot be used in the SMTP envelope")


def _outcome_unknown(cause: ConnectError) -> ConnectError:
    return ConnectError(
        "the connection was lost after the whole message was sent; it may have been delivered",
        reply=cause.reply,
        diagnosis=Diagnosis(
            Category.OUTCOME_UNKNOWN,
            "The message was sent, but the server's answer never came.",
            (
                "It may have been delivered: check (e.g. the Sent folder or with the "
                "recipient) before sending again, or it may arrive twice.",
            ),
        ),
        temporary=False,
    )


def _check_envelope(sender: str, recipients: Sequence[str]) -> None:
    if not recipients:
        raise MessageError("to", "at least one recipient is needed")
    if sender:  # the null reverse-path <> is allowed (bounces)
        _check_path("sender", sender)
    for recipient in recipients:
        _check_path("to", recipient)


def _chunked(
    connection: SmtpConnection, sender: str, recipients: Sequence[str], raw: bytes, smtputf8: bool
) -> Transaction:
    """MAIL, every RCPT and `BDAT n LAST` with the message, in one write (RFC 3030 + 2920).

    One round trip per message. The server reads the chunk whatever it thinks of
    the envelope, and refuses it when no recipient was accepted.
    """
    from .connection import Transaction

    _check_envelope(sender, recipients)
    payload = normalize_data(raw)
    mail = f"MAIL FROM:<{sender}>" + _mail_parameters(
        connection.extensions, len(payload), raw, smtputf8
    )
    lines = (["RSET"] if connection.needs_reset else []) + [
        mail,
        *(f"RCPT TO:<{r}>" for r in recipients),
        f"BDAT {len(payload)} LAST",
    ]
    for line in lines:
        log.debug("C: %s", line)
    wire = b"".join(check_command(line) for line in lines) + payload
    # The whole message goes out with the envelope, and a pipelining server may hold
    # every reply until it has queued it: from here on, a lost or late reply means
    # the message may have been delivered, and nothing is retried automatically.
    connection.data_started = True
    connection.write_bytes(wire, timeout=connection.settings.data_timeout)
    replies: list[SmtpReply] = []
    for line in lines:
        try:
            reply = connection.read_reply(
                f"the reply to {line.split(':')[0]}", connection.settings.data_timeout
            )
        except ConnectError as exc:
            raise _outcome_unknown(exc) from None
        replies.append(_checked(reply))  # an explicit 421 is a refusal: temporary
    if connection.needs_reset:
        replies.pop(0)
    mail_reply, rcpt_replies, final = replies[0], replies[1:-1], replies[-1]
    accepted = tuple(r for r, reply in zip(recipients, rcpt_replies, strict=True) if _ok(reply))
    refused = {
        r: reply for r, reply in zip(recipients, rcpt_replies, strict=True) if not _ok(reply)
    }
    if not _ok(mail_reply):
        raise diagnostics.sender_refused(mail_reply, sender)
    if not accepted:
        raise diagnostics.recipients_refused(refused)
    if final.code // 100 != 2:
        raise diagnostics.data_refused(final)
    return Transaction(accepted=accepted, refused=refused, reply=final)


def _checked(reply: SmtpReply) -> SmtpReply:
    if reply.closes_connection:
        raise _closing(reply)
    return reply


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


def _abort_data(connection: SmtpConnection) -> None:
    """A 354 came although the envelope failed: end the empty message (RFC 2920 3.1)."""
    connection.write_bytes(b".\r\n")
    connection.read_reply("the reply to an aborted message")


def run_transaction(
    connection: SmtpConnection,
    sender: str,
    *,
    recipients: Sequence[str],
    raw: bytes,
    smtputf8: bool,
) -> Transaction:
    """Send `raw` from `sender` to `recipients`, with BDAT or DATA as the server allows."""
    from .connection import Transaction

    extensions = connection.extensions
    if "CHUNKING" in extensions and "PIPELINING" in extensions and connection.settings.chunking:
        return _chunked(connection, sender, recipients, raw, smtputf8)
    framed = frame_data(raw)

    if not recipients:
        raise MessageError("to", "at least one recipient is needed")
    _check_envelope(sender, recipients)
    mail = f"MAIL FROM:<{sender}>" + _mail_parameters(extensions, len(framed), raw, smtputf8)
    rcpts = [f"RCPT TO:<{recipient}>" for recipient in recipients]
    pipelined = "PIPELINING" in extensions

    reset = connection.needs_reset
    rcpt_replies: list[SmtpReply] = []
    data_reply: SmtpReply | None = None
    if pipelined:
        lines = (["RSET"] if reset else []) + [mail, *rcpts, "DATA"]
        for line in lines:
            log.debug("C: %s", line)
        connection.write_bytes(b"".join(check_command(line) for line in lines))
        replies = [
            _checked(connection.read_reply(f"the reply to {line.split(':')[0]}")) for line in lines
        ]
        if reset:
            replies.pop(0)
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
    else:
        if reset:
            _checked(connection.command("RSET"))
        mail_reply = _checked(connection.command(mail))
        if _ok(mail_reply):
            rcpt_replies = [_checked(connection.command(line)) for line in rcpts]
            if any(_ok(reply) for reply in rcpt_replies):
                data_reply = _checked(connection.command("DATA"))
    accepted = tuple(r for r, reply in zip(recipients, rcpt_replies, strict=False) if _ok(reply))
    refused = {
        r: reply for r, reply in zip(recipients, rcpt_replies, strict=False) if not _ok(reply)
    }

    if not _ok(mail_reply) or not accepted:
        if data_reply is not None and data_reply.code == 354:
            _abort_data(connection)
        if not _ok(mail_reply):
            raise diagnostics.sender_refused(mail_reply, sender)
        raise diagnostics.recipients_refused(refused)
    assert data_reply is not None
    if data_reply.code != 354:
        raise diagnostics.data_refused(data_reply)

    connection.data_started = True
    connection.write_bytes(framed, timeout=connection.settings.data_timeout)
    try:
        final = connection.read_reply("the reply to the message", connection.settings.data_timeout)
    except ConnectError as exc:
        raise _outcome_unknown(exc) from None
    if _checked(final).code // 100 != 2:
        raise diagnostics.data_refused(final)
    return Transaction(accepted=accepted, refused=refused, reply=final)
