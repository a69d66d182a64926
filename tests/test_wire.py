from __future__ import annotations

import pytest

from mailbridge import MessageFormatError, SmtpReply
from mailbridge.smtp.wire import check_command, frame_data


@pytest.mark.parametrize(
    ("raw", "framed"),
    [
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b".start\r\n..two\r\n", b"..start\r\n...two\r\n.\r\n"),
        # SMTP smuggling attempts: every variant of an end-of-data marker becomes a stuffed dot
        (b"x\n.\nMAIL FROM:<a@b>\n", b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n"),
        (b"x\r\n.\nDATA\r\n", b"x\r\n..\r\nDATA\r\n.\r\n"),
        (b"x\r.\r\nRCPT", b"x\r\n..\r\nRCPT\r\n.\r\n"),
        (b"x\n.\r\n", b"x\r\n..\r\n.\r\n"),
    ],
)
def test_frame_data_normalizes_and_stuffs(raw: bytes, framed: bytes) -> None:
    assert frame_data(raw) == framed


def test_frame_data_never_leaves_bare_cr_or_lf() -> None:
    framed = frame_data(b"\r\r\n\n\r.\n.\r\r\n")
    assert framed.count(b"\r") == framed.count(b"\n") == framed.count(b"\r\n")


def test_long_lines_are_refused_not_sent() -> None:
    with pytest.raises(MessageFormatError, match="999 octets long"):
        frame_data(b"a" * 999 + b"\r\n")
    assert frame_data(b"a" * 998)


def test_commands_cannot_be_split() -> None:
    with pytest.raises(MessageFormatError):
        check_command("RCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>")


def test_reply_parsing() -> None:
    reply = SmtpReply.parse(550, ["5.1.1 <x@y.example>: Recipient address rejected"])
    assert reply == SmtpReply(550, "5.1.1", "<x@y.example>: Recipient address rejected")
    assert reply.is_permanent and not reply.is_temporary
    assert str(reply) == "550 5.1.1 <x@y.example>: Recipient address rejected"
    multi = SmtpReply.parse(250, ["mail.example", "PIPELINING", "SIZE 1000"])
    assert multi.enhanced_status is None and multi.text.splitlines()[1] == "PIPELINING"
    assert SmtpReply.parse(421, ["4.7.0 closing"]).closes_connection
    # an enhanced code whose class does not match the reply code is left in the text
    assert SmtpReply.parse(550, ["2.0.0 odd"]).enhanced_status is None
