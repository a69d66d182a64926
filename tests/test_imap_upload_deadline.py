"""The IMAP command deadline covers waiting for the server, not uploading an APPEND's message."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from mailbridge import ImapSettings
from mailbridge.errors import ImapTimeout
from mailbridge.imap import ImapLimits, close_imap, open_imap
from mailbridge.imap._client import BoundedClient

MESSAGE = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26_000  # about 2 MB


class SlowReader:
    """Accepts one session; reads an APPEND literal slowly (`pause` per 64 KiB for the first
    `slow_bytes`), or stops reading after `slow_bytes` when `stall` is set."""

    def __init__(self, *, slow_bytes: int, pause: float, stall: bool = False) -> None:
        self.slow_bytes, self.pause, self.stall = slow_bytes, pause, stall
        self.received = 0
        self.stopping = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SlowReader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()

    def settings(self) -> ImapSettings:
        return ImapSettings(
            "127.0.0.1",
            self.port,
            security="none",
            username="u",
            password="p",
            allow_plaintext_auth=True,
            command_timeout=0.5,
        )

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                self._converse(conn)
            except OSError:
                return

    def _converse(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb", buffering=0)
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        for _ in range(10):
            line = reader.readline(4096)
            if not line:
                return
            tag, upper = line.split(b" ")[0], line.upper()
            if b"APPEND" in upper:
                size = int(re.search(rb"\{(\d+)\}", line).group(1))  # type: ignore[union-attr]
                conn.sendall(b"+ go\r\n")
                if not self._take(reader, size):
                    return
                reader.readline(4096)
                conn.sendall(tag + b" OK [APPENDUID 1 1] stored\r\n")
            elif b"LOGOUT" in upper:
                conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                conn.sendall(tag + b" OK done\r\n")

    def _take(self, reader: object, size: int) -> bool:
        for _ in range(size // 1024 + 1):  # each round reads at least one byte, or ends
            if self.received >= size:
                return True
            slow = self.received < self.slow_bytes
            if not slow and self.stall:
                self.stopping.wait(5)
                return False
            data = reader.read(min(65536, size - self.received))  # type: ignore[attr-defined]
            if not data:
                return False
            self.received += len(data)
            if slow:
                self.stopping.wait(self.pause)
        return self.received >= size


def _open(server: SlowReader) -> BoundedClient:
    client = open_imap(server.settings(), limits=ImapLimits(command_seconds=0.5))
    # A small send buffer, so that the upload really waits for the slow reader.
    client.socket().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    return client


def test_a_slow_upload_does_not_count_against_the_command_deadline() -> None:
    with SlowReader(slow_bytes=1024 * 1024, pause=0.05) as server:
        client = _open(server)
        started = time.monotonic()
        try:
            client.append("INBOX", MESSAGE)
        finally:
            close_imap(client)
        took = time.monotonic() - started
    assert server.received == len(MESSAGE)
    assert took > 0.5  # longer than command_seconds, and still no time-out


def test_a_stalled_upload_fails_within_the_read_time_out() -> None:
    with SlowReader(slow_bytes=256 * 1024, pause=0.0, stall=True) as server:
        client = _open(server)
        started = time.monotonic()
        try:
            with pytest.raises(ImapTimeout):
                client.append("INBOX", MESSAGE)
        finally:
            close_imap(client)
    assert time.monotonic() - started < 3
