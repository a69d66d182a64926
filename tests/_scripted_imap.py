"""A small plaintext IMAP server on loopback that answers from a script, for hostile cases.

Only what the importer and the archiver send is understood: CAPABILITY, LOGIN,
SELECT/EXAMINE, UID SEARCH, UID FETCH, APPEND (with literals, LITERAL+ or not),
LIST, NOOP, IDLE, LOGOUT. Tests change the answers through the attributes.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

from mailbridge import ImapSettings

_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")
_PARTIAL = re.compile(rb"BODY\.PEEK\[([\d.]+)\](?:<(\d+)\.(\d+)>)?", re.IGNORECASE)


def _uids(text: bytes) -> list[int]:
    uids: list[int] = []
    for piece in text.split(b","):
        first, _, last = piece.partition(b":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids


class ScriptedImap:
    """`structures[uid]`: the FETCH items after UID for BODYSTRUCTURE requests (raw bytes);
    `bodies[(uid, section)]`: part contents; `select_lines`: untagged SELECT lines;
    `append_reply`: the tagged reply to APPEND; `on_idle`: bytes sent before "+" to IDLE
    (and `delivered_on_idle` the UIDs that arrive then).
    `appends` counts the message literals received; `sent_body_bytes` the part bytes sent.
    `ignore_ranges`: UIDs whose parts are sent whole, whatever partial range was asked.
    """

    def __init__(self, capabilities: str = "IMAP4rev1 LITERAL+ IDLE MULTIAPPEND UIDPLUS") -> None:
        self.capabilities = capabilities
        self.structures: dict[int, bytes] = {}
        self.bodies: dict[tuple[int, str], bytes] = {}
        self.select_lines = [b"* 3 EXISTS", b"* OK [UIDVALIDITY 7] ok", b"* OK [UIDNEXT 100] ok"]
        self.search_uids: list[int] = []
        self.search_line: bytes | None = None  # replaces "* SEARCH <search_uids>"
        self.drop_on: bytes | None = None  # a command (b"UID FETCH") that closes the connection
        self.ignore_ranges: set[int] = set()
        self.append_reply = b"OK [APPENDUID 7 1] done"
        self.on_idle = b""
        self.delivered_on_idle: list[int] = []  # UIDs SEARCH finds once IDLE was sent
        self.appends = 0
        self.sent_body_bytes = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def settings(self, **changes: Any) -> ImapSettings:
        values: dict[str, Any] = {
            "security": "none",
            "username": "u@example.test",
            "password": "pw",
            "allow_plaintext_auth": True,
            "connect_timeout": 5.0,
            "command_timeout": 5.0,
        }
        values.update(changes)
        return ImapSettings("127.0.0.1", self.port, **values)

    def __enter__(self) -> ScriptedImap:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accepter.join(5)
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read_command(self, reader: Any, conn: socket.socket) -> tuple[bytes, int]:
        """One command line with its literals inlined, and how many literals it had."""
        line = reader.readline(1 << 20)
        command, literals = b"", 0
        while True:
            match = _LITERAL.search(line)
            if match is None:
                return command + line.rstrip(b"\r\n"), literals
            if not match.group(2):
                conn.sendall(b"+ go\r\n")
            command += line[: match.start()] + b"<literal>"
            literals += 1
            reader.read(int(match.group(1)))
            line = reader.readline(1 << 20)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)  # a safety net; __exit__ shuts connections down
        reader = conn.makefile("rb")
        idle_tag = b"*"
        try:
            conn.sendall(b"* OK ready\r\n")
            for _ in range(1000):  # bounded: a test's session is short
                command, literals = self._read_command(reader, conn)
                if not command:
                    return
                self.requests.append(command)
                tag, _, rest = command.partition(b" ")
                if command.upper() == b"DONE":
                    conn.sendall(idle_tag + b" OK idle done\r\n")
                    continue
                if rest.upper() == b"IDLE":
                    idle_tag = tag
                if self.drop_on is not None and rest.upper().startswith(self.drop_on):
                    return
                reply = self._answer(tag, rest, literals, conn)
                conn.sendall(reply)
                if rest.upper().startswith(b"LOGOUT"):
                    return
        except OSError:
            return
        finally:
            reader.close()
            conn.close()

    def _answer(self, tag: bytes, rest: bytes, literals: int, conn: socket.socket) -> bytes:
        upper = rest.upper()
        done = tag + b" OK done\r\n"
        handlers: dict[bytes, Callable[[], bytes]] = {
            b"CAPABILITY": lambda: b"* CAPABILITY " + self.capabilities.encode() + b"\r\n" + done,
            b"LOGIN": lambda: done,
            b"SELECT": lambda: b"".join(line + b"\r\n" for line in self.select_lines) + done,
            b"EXAMINE": lambda: b"".join(line + b"\r\n" for line in self.select_lines) + done,
            b"UID SEARCH": lambda: self._search() + done,
            b"UID FETCH": lambda: self._fetch(rest) + done,
            b"APPEND": lambda: self._append(tag, literals),
            b"LIST": lambda: b'* LIST (\\Sent) "/" "Sent"\r\n' + done,
            b"IDLE": lambda: self._idle(tag, conn),
            b"LOGOUT": lambda: b"* BYE bye\r\n" + done,
        }
        for name, handler in handlers.items():
            if upper.startswith(name):
                return handler()
        return done

    def _search(self) -> bytes:
        if self.search_line is not None:
            return self.search_line + b"\r\n"
        return b"* SEARCH " + b" ".join(b"%d" % uid for uid in self.search_uids) + b"\r\n"

    def _append(self, tag: bytes, literals: int) -> bytes:
        self.appends += literals
        return tag + b" " + self.append_reply + b"\r\n"

    def _idle(self, tag: bytes, conn: socket.socket) -> bytes:
        self.search_uids += self.delivered_on_idle
        self.delivered_on_idle = []
        conn.sendall(self.on_idle + b"+ idling\r\n")
        return b""  # DONE comes as the next "command"; answered below

    def _fetch(self, rest: bytes) -> bytes:
        arguments = rest.split(b" ", 3)
        out = b""
        for uid in _uids(arguments[2]):
            if b"BODYSTRUCTURE" in rest.upper():
                if uid in self.structures:
                    out += b"* %d FETCH (UID %d %s)\r\n" % (uid, uid, self.structures[uid])
                continue
            items = b""
            for section, start, asked in _PARTIAL.findall(rest):
                data = self.bodies.get((uid, section.decode()), b"")
                length = b"" if uid in self.ignore_ranges else asked  # the whole part: BODY[n]
                if length:
                    data = data[int(start) : int(start) + int(length)]
                self.sent_body_bytes += len(data)
                label = b"BODY[%s]<%s>" % (section, start) if length else b"BODY[%s]" % section
                items += b" %s {%d}\r\n%s" % (label, len(data), data)
            out += b"* %d FETCH (UID %d%s)\r\n" % (uid, uid, items)
        return out
