"""The state and I/O of one `FakeImapServer` connection, and helpers its commands share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._imap_mutf7 import decode_mutf7
from ._imap_store import Folder, Store, StoredMessage
from ._imap_syntax import (
    Atom,
    ParseError,
    Token,
    in_ranges,
    parse_sequence_set,
)

if TYPE_CHECKING:
    from ._imap import FakeImapServer


MAX_LINE = 65_536


class Closed(Exception):
    """The connection is gone, or must be closed now."""


class No(Exception):
    """A semantic error: the tagged answer is NO with this text."""


class Connection(asyncio.Protocol):
    """One IMAP connection's state and I/O, with the helpers all its commands share."""

    def __init__(self, server: FakeImapServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.event = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.tls = False
        self.user: str | None = None
        self.folder: Folder | None = None
        self.readonly = False
        self.view: list[int] = []
        self.validity = 0
        self.out: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    # -- transport ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 2 * MAX_LINE + self.server.max_literal and self.transport:
            self.write(b"* BYE Too much data\r\n")
            self.transport.close()
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.event.set()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def wait_data(self, deadline: float) -> None:
        if self.closed:
            raise Closed
        self.event.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Closed
        try:
            await asyncio.wait_for(self.event.wait(), remaining)
        except TimeoutError:
            raise Closed from None

    async def readline(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.server.autologout_seconds)
        while (end := self.buffer.find(b"\n", 0, MAX_LINE + 1)) < 0:
            if len(self.buffer) > MAX_LINE:
                self.write(b"* BYE Line too long\r\n")
                raise Closed
            await self.wait_data(deadline)
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    async def readexactly(self, size: int) -> bytes:
        deadline = time.monotonic() + self.server.autologout_seconds
        while len(self.buffer) < size:
            await self.wait_data(deadline)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def untagged(self, data: bytes) -> None:
        self.out.append(b"* " + data + b"\r\n")

    def sync(self, *, expunge: bool) -> None:
        folder = self.folder
        assert folder is not None
        if folder.uidvalidity != self.validity:
            self.validity = folder.uidvalidity
            self.view = []
            self.untagged(b"OK [UIDVALIDITY %d] UIDs changed" % folder.uidvalidity)
        uids = [message.uid for message in folder.messages]
        if expunge:
            present, index = set(uids), 0
            while index < len(self.view):
                if self.view[index] in present:
                    index += 1
                else:
                    del self.view[index]
                    self.untagged(b"%d EXPUNGE" % (index + 1))
        highest = self.view[-1] if self.view else 0
        new = [uid for uid in uids if uid > highest]
        if new:
            self.view.extend(new)
            self.untagged(b"%d EXISTS" % len(self.view))

    # -- helpers --------------------------------------------------------------------

    def capabilities(self) -> bytes:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "IDLE", "NAMESPACE", "UIDPLUS"]
        caps += ["MOVE", "SPECIAL-USE", "CHILDREN", "LIST-EXTENDED", "MULTIAPPEND", "UNSELECT"]
        if self.server.tls == "starttls" and not self.tls:
            caps += ["STARTTLS", "LOGINDISABLED"]
        elif self.user is None:
            caps += ["AUTH=PLAIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"]
        omit = {name.upper() for name in self.server.omit_capabilities}
        return " ".join(cap for cap in caps if cap.upper() not in omit).encode()

    @property
    def store(self) -> Store:
        assert self.user is not None
        return self.server._store(self.user)

    def mailbox_name(self, token: Token) -> str:
        if isinstance(token, list):
            raise ParseError("expected a mailbox name")
        raw = token.encode("ascii") if isinstance(token, str) else token
        try:
            name = decode_mutf7(raw)
        except ParseError as exc:
            raise No(f"Mailbox name is not valid mUTF-7: {exc}") from None
        return self.store.key(name.rstrip(self.store.delimiter) or name)

    def existing(
        self, token: Token, *, selectable: bool = True, code: str = "NONEXISTENT"
    ) -> Folder:
        name = self.mailbox_name(token)
        folder = self.store.get(name)
        if folder is None:
            raise No(f"[{code}] Mailbox doesn't exist: {name}")
        if selectable and not folder.selectable:
            raise No(f"[CANNOT] Mailbox is not selectable: {name}")
        return folder

    def selected(self, set_text: Token, uid: bool) -> list[tuple[int, StoredMessage]]:
        """(sequence number, message) for a sequence or UID set, in order."""
        assert self.folder is not None
        by_uid = {message.uid: message for message in self.folder.messages}
        if not isinstance(set_text, Atom):
            raise ParseError("expected a sequence set")
        largest = (self.view[-1] if self.view else 0) if uid else len(self.view)
        ranges = parse_sequence_set(set_text, largest)
        if not uid and any(high > len(self.view) for _, high in ranges):
            raise ParseError("Invalid messageset")
        return [
            (seq, by_uid[msg_uid])
            for seq, msg_uid in enumerate(self.view, 1)
            if msg_uid in by_uid and in_ranges(msg_uid if uid else seq, ranges)
        ]

    def reply_fault(self, text: str) -> No:
        if text.upper().startswith("BAD "):
            raise ParseError(text[4:])
        return No(text[3:] if text.upper().startswith("NO ") else text)

    def flags_text(self, flags: Iterable[str]) -> bytes:
        return b"(" + " ".join(sorted(flags)).encode("utf-8", "replace") + b")"
