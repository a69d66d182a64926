"""Replies from bytes: an incremental, bounded SMTP reply parser (RFC 5321 4.2).

Bytes go in as they arrive (`feed`), complete replies come out (`next_reply`),
however the bytes were split: a reply that is not complete yet stays buffered
and its lines parsed so far are kept.
"""

from __future__ import annotations

from ...diagnosis import Category, Diagnosis
from ...errors import ProtocolError
from ...reply import SmtpReply

__all__ = ["MAX_REPLY_LINE", "MAX_REPLY_LINES", "ReplyReader"]

MAX_REPLY_LINE = 4096  # RFC 5321 allows 512; be lenient but bounded
MAX_REPLY_LINES = 200
_CODE_FIRST = frozenset(b"2345")
_DIGITS = frozenset(b"0123456789")


def _not_smtp(line: bytes) -> ProtocolError:
    text = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
    return ProtocolError(
        f"the server answered {text[:80]!r}, which is not an SMTP reply",
        diagnosis=Diagnosis(
            Category.PROTOCOL,
            "The server on this port does not speak SMTP as expected.",
            ("Check the port number and the security setting.",),
        ),
    )


def _broken(message: str) -> ProtocolError:
    return ProtocolError(
        message, diagnosis=Diagnosis(Category.PROTOCOL, "The server broke the SMTP protocol.")
    )


class ReplyReader:
    """A receive buffer that yields complete SMTP replies.

    `next_reply()` returns None until a whole reply has arrived. Raises
    `ProtocolError` for a line that is not a reply line, a line longer than
    `MAX_REPLY_LINE`, mixed codes within one reply or more than
    `MAX_REPLY_LINES` lines; the reader is unusable afterwards.
    """

    __slots__ = ("_buffer", "_code", "_texts")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._code = 0  # of the reply being read, 0 when none is started
        self._texts: list[str] = []

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """How many received bytes no complete reply has consumed yet."""
        return len(self._buffer) + (1 if self._code else 0)

    def discard(self) -> int:
        """Drop everything received and not yet returned; returns how many bytes there were."""
        count = len(self._buffer)
        self._buffer.clear()
        self._code, self._texts = 0, []
        return count

    def next_reply(self) -> SmtpReply | None:
        """The next complete reply, or None when more bytes are needed."""
        buffer = self._buffer
        start = 0
        try:
            while True:
                end = buffer.find(b"\n", start)
                if end == -1:
                    if len(buffer) - start > MAX_REPLY_LINE:
                        raise _broken_line()
                    return None
                if end - start > MAX_REPLY_LINE:
                    raise _broken_line()
                line = bytes(buffer[start : end + 1])
                start = end + 1
                if not self._code and line[3:4] == b" " and line[:3].isdigit():
                    # The usual case, a one-line reply: no state to keep between lines.
                    code = int(line[:3])
                    if code < 200 or code >= 600:
                        raise _not_smtp(line)
                    text = line[4:].rstrip(b"\r\n").decode("utf-8", errors="replace")
                    return SmtpReply.parse(code, [text])
                reply = self._line(line)
                if reply is not None:
                    return reply
        finally:
            if start:
                del buffer[:start]

    def _line(self, line: bytes) -> SmtpReply | None:
        length = len(line.rstrip(b"\r\n"))
        if (
            length < 3
            or line[0] not in _CODE_FIRST
            or line[1] not in _DIGITS
            or line[2] not in _DIGITS
            or (length > 3 and line[3] not in b" -")
        ):
            raise _not_smtp(line)
        code = int(line[:3])
        if self._code and code != self._code:
            raise _broken("the server mixed reply codes within one reply")
        self._code = code
        self._texts.append(line[4:length].decode("utf-8", errors="replace"))
        if length == 3 or line[3] == 32:  # b" "
            texts, self._code, self._texts = self._texts, 0, []
            return SmtpReply.parse(code, texts)
        if len(self._texts) >= MAX_REPLY_LINES:
            raise _broken("the server sent a reply with too many lines")
        return None


def _broken_line() -> ProtocolError:
    return ProtocolError(
        "the server sent a reply line longer than allowed",
        diagnosis=Diagnosis(Category.PROTOCOL, "The server does not speak SMTP."),
    )
