from __future__ import annotations

import socket
import threading
import time

import pytest

from mailbridge import ConnectError, MessageFormatError, ProtocolError, SmtpReply
from mailbridge.smtp.wire import Channel, check_command, frame_data


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


def test_ehlo_reply_with_empty_first_line_keeps_every_extension() -> None:
    reply = SmtpReply.parse(250, ["", "PIPELINING", "SIZE 1000", "8BITMIME"])
    assert reply.text.splitlines()[1:] == ["PIPELINING", "SIZE 1000", "8BITMIME"]


def _channel_with(data: bytes) -> Channel:
    left, right = socket.socketpair()
    right.sendall(data)
    right.close()
    return Channel(left)


@pytest.mark.parametrize(
    "data",
    [
        b"\xd9\xa2\xd9\xa5\xd9\xa0 ok\r\n",
        b"000 zero\r\n",
        b"999 nine\r\n",
        b"250x\r\n",
        b"250 " + b"a" * 5000 + b"\r\n",
    ],
)
def test_malformed_replies_are_protocol_errors(data: bytes) -> None:
    channel = _channel_with(data)
    with pytest.raises(ProtocolError):
        channel.read_reply(1.0)
    channel.close()


def test_reply_deadline_covers_the_whole_reply() -> None:
    left, right = socket.socketpair()
    channel = Channel(left)
    stop = threading.Event()

    def trickle() -> None:
        for _ in range(50):
            if stop.wait(0.1):
                break
            right.sendall(b"250-slow\r\n")

    thread = threading.Thread(target=trickle)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConnectError):
            channel.read_reply(0.5)
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        thread.join(5)
        channel.close()
        right.close()


@pytest.mark.parametrize("padding", [0, 5 * 1024 * 1024], ids=["small", "over-4-MiB"])
def test_line_length_is_checked_in_small_and_large_messages(padding: int) -> None:
    body = (b"x" * 76 + b"\r\n") * (padding // 78)
    frame_data(body + b"a" * 998 + b"\r\n" + body)  # 998 octets: allowed
    with pytest.raises(MessageFormatError, match="999 octets long"):
        frame_data(body + b"a" * 999 + b"\r\nend")
