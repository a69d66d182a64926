"""IMAP commands of the selected state: FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE, CLOSE."""

from __future__ import annotations

import re
from collections.abc import Callable

from ._imap_connection import Connection, No
from ._imap_mime import header_fields
from ._imap_search import compile_search, search_codec
from ._imap_store import SYSTEM_FLAGS, StoredMessage
from ._imap_syntax import (
    Atom,
    ParseError,
    Token,
    astring,
    atoms,
    compress_uids,
    format_internaldate,
    quote,
)

_FETCH_ITEM = re.compile(r"(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?", re.IGNORECASE)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}


class MessageCommands(Connection):
    """CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY and MOVE."""

    async def cmd_close(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        assert self.folder is not None
        if not self.readonly:
            self.folder.messages = [m for m in self.folder.messages if "\\Deleted" not in m.flags]
        self.folder = None
        return b"OK Close completed."

    async def cmd_unselect(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.folder = None
        return b"OK Unselect completed."

    async def cmd_expunge(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        assert self.folder is not None
        if self.readonly:
            raise No("Mailbox is read-only")
        chosen = {m.uid for _, m in self.selected(args[0], True)} if uid else None
        self.folder.messages = [
            m
            for m in self.folder.messages
            if "\\Deleted" not in m.flags or (chosen is not None and m.uid not in chosen)
        ]
        self.server._changed(self.folder)
        return b"OK Expunge completed."

    async def cmd_search(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        assert self.folder is not None
        codec = search_codec(None)
        if args and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
            if len(args) < 2:
                raise ParseError("CHARSET needs a name")
            codec = search_codec(astring(args[1]))
            if codec is None:
                raise No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            args = args[2:]
        assert codec is not None
        test = compile_search(args, len(self.view), self.view[-1] if self.view else 0, codec)
        found = [
            str(m.uid if uid else seq).encode()
            for seq, m in self.selected(Atom("1:*"), True)
            if test(seq, m)
        ]
        self.untagged(b" ".join([b"SEARCH", *found]))
        return b"OK Search completed."

    async def cmd_fetch(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if len(args) < 2:
            raise ParseError("FETCH needs a sequence set and items")
        names = atoms(args[1])
        if len(names) == 1 and names[0].upper() in _MACROS:
            names = _MACROS[names[0].upper()]
        if uid and "UID" not in [n.upper() for n in names]:
            names = ["UID", *names]
        for seq, message in self.selected(args[0], uid):
            seen = "\\Seen" in message.flags
            items = [self.fetch_item(name, message) for name in names]
            if not seen and "\\Seen" in message.flags and "FLAGS" not in map(str.upper, names):
                items.append(b"FLAGS " + self.flags_text(message.flags))
            self.untagged(b"%d FETCH (" % seq + b" ".join(items) + b")")
        return b"OK Fetch completed."

    def fetch_item(self, name: str, message: StoredMessage) -> bytes:
        upper = name.upper()
        part = message.part
        simple: dict[str, Callable[[], bytes]] = {
            "UID": lambda: b"%d" % message.uid,
            "FLAGS": lambda: self.flags_text(message.flags),
            "INTERNALDATE": lambda: format_internaldate(message.internal_date),
            "RFC822.SIZE": lambda: b"%d" % len(message.data),
            "ENVELOPE": part.envelope,
            "BODYSTRUCTURE": part.bodystructure,
            "BODY": lambda: part.bodystructure(extensible=False),
            "RFC822": lambda: quote(message.data),
            "RFC822.HEADER": lambda: quote(part.header),
            "RFC822.TEXT": lambda: quote(part.body),
        }
        if upper in simple:
            if upper in ("RFC822", "RFC822.TEXT"):
                self.mark_seen(message)
            return upper.encode() + b" " + simple[upper]()
        match = _FETCH_ITEM.fullmatch(name)
        if match is None:
            raise ParseError(f"unknown FETCH item {name}")
        if match.group(1).upper() == "BODY":
            self.mark_seen(message)
        section = match.group(2).upper()
        numbers = re.match(r"(\d+(?:\.\d+)*)?\.?", section)
        assert numbers is not None
        path = [int(n) for n in (numbers.group(1) or "").split(".") if n]
        spec = section[numbers.end() :]
        node = part.find(path)
        if node is not None and path and spec and spec != "MIME":
            node = node.message  # HEADER, TEXT, HEADER.FIELDS of a part: message/rfc822 only
        if node is None:
            data = b""
        elif spec == "":
            data = node.body if path else message.data
        elif spec == "HEADER":
            data = node.header
        elif spec == "TEXT":
            data = node.body
        elif spec == "MIME" and path:
            data = node.header
        elif spec.startswith("HEADER.FIELDS"):
            fields = re.fullmatch(r"HEADER\.FIELDS(\.NOT)? \(([^()]*)\)", spec)
            if fields is None:
                raise ParseError("bad HEADER.FIELDS")
            data = header_fields(
                node.header, fields.group(2).replace('"', "").split(), exclude=bool(fields[1])
            )
        else:
            raise ParseError(f"bad section {section}")
        label = "BODY[" + match.group(2) + "]"
        if match.group(3) is not None:
            start = int(match.group(3))
            length = int(match.group(4)) if match.group(4) is not None else len(data)
            data = data[start : start + length]
            label += f"<{start}>"
        return label.encode() + b" " + b"{%d}\r\n" % len(data) + data

    def mark_seen(self, message: StoredMessage) -> None:
        if not self.readonly and "\\Seen" not in message.flags:
            message.flags.add("\\Seen")

    async def cmd_store(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if len(args) < 3 or not isinstance(args[1], Atom):
            raise ParseError("STORE needs a sequence set, an item and flags")
        if self.readonly:
            return b"OK Store ignored with read-only mailbox."
        item = args[1].upper()
        silent = item.endswith(".SILENT")
        action = item.removesuffix(".SILENT")
        if action not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise ParseError(f"unknown STORE item {item}")
        flags: list[str] = []
        for token in args[2:]:
            flags += atoms(token)
        canonical = {flag.lower(): flag for flag in SYSTEM_FLAGS}
        for index, flag in enumerate(flags):
            if flag.startswith("\\"):
                if flag.lower() not in canonical:
                    raise ParseError(f"Invalid system flag {flag}")
                flags[index] = canonical[flag.lower()]
        for seq, message in self.selected(args[0], uid):
            if action == "FLAGS":
                message.flags = set(flags)
            elif action == "+FLAGS":
                message.flags.update(flags)
            else:
                message.flags.difference_update(flags)
            if not silent:
                uid_item = b"UID %d " % message.uid if uid else b""
                self.untagged(
                    b"%d FETCH (" % seq
                    + uid_item
                    + b"FLAGS "
                    + self.flags_text(message.flags)
                    + b")"
                )
        return b"OK Store completed."

    async def cmd_copy(self, tag: bytes, args: list[Token], uid: bool, move: bool = False) -> bytes:
        assert self.folder is not None
        if len(args) != 2:
            raise ParseError("COPY needs a sequence set and a mailbox")
        chosen = self.selected(args[0], uid)
        target = self.existing(args[1], code="TRYCREATE")
        if move and self.readonly:
            raise No("Mailbox is read-only")
        if not chosen:
            return b"OK No messages found."
        new = [target.add(m.data, m.flags, m.internal_date) for _, m in chosen]
        code = b"COPYUID %d %s %s" % (
            target.uidvalidity,
            compress_uids([m.uid for _, m in chosen]).encode(),
            compress_uids(new).encode(),
        )
        self.server._changed(target)
        if not move:
            return b"OK [" + code + b"] Copy completed."
        self.untagged(b"OK [" + code + b"] Moved UIDs.")
        moved = {m.uid for _, m in chosen}
        self.folder.messages = [m for m in self.folder.messages if m.uid not in moved]
        self.server._changed(self.folder)
        return b"OK Move completed."

    async def cmd_move(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return await self.cmd_copy(tag, args, uid, move=True)
