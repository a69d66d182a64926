"""IMAP commands of the authenticated state: mailboxes, SELECT, APPEND, IDLE."""

from __future__ import annotations

import datetime as dt
import time

from ._imap_connection import Connection, No
from ._imap_mutf7 import decode_mutf7, encode_mutf7
from ._imap_store import SYSTEM_FLAGS, Folder
from ._imap_syntax import (
    Atom,
    Literal,
    ParseError,
    Token,
    astring,
    atoms,
    compress_uids,
    parse_internaldate,
    quote,
)

IDLE_LIMIT = 1800.0


class MailboxCommands(Connection):
    """Authenticated-state commands: mailbox management, SELECT/EXAMINE, APPEND, IDLE."""

    async def cmd_namespace(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        store = self.store
        personal = quote(encode_mutf7(store.prefix)) + b" " + quote(store.delimiter)
        self.untagged(b"NAMESPACE ((" + personal + b")) NIL NIL")
        return b"OK Namespace completed."

    async def cmd_create(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        name = self.mailbox_name(args[0])
        store = self.store
        if not name or "*" in name or "%" in name:
            raise No("[CANNOT] Invalid mailbox name")
        if store.get(name) is not None:
            raise No("[ALREADYEXISTS] Mailbox already exists")
        # Like Dovecot, superior names are not created: LIST shows them as \Noselect.
        store.folders[name] = Folder(name, None, self.server._next_validity())
        return b"OK Create completed."

    async def cmd_delete(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        folder = self.existing(args[0], selectable=False)
        if folder.name == "INBOX":
            raise No("INBOX can't be deleted.")
        if self.store.has_children(folder.name):
            raise No("[CANNOT] Mailbox has children, delete them first")
        del self.store.folders[folder.name]
        self.store.subscribed.discard(folder.name)
        if self.folder is folder:
            self.folder = None
        return b"OK Delete completed."

    async def cmd_rename(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        folder, new = self.existing(args[0], selectable=False), self.mailbox_name(args[1])
        store = self.store
        if folder.name == "INBOX":
            raise No("[CANNOT] Renaming INBOX isn't supported")
        if store.get(new) is not None:
            raise No("[ALREADYEXISTS] Mailbox already exists")
        old = folder.name
        for name in [n for n in store.folders if n == old or n.startswith(old + store.delimiter)]:
            moved = store.folders.pop(name)
            moved.name = new + name[len(old) :]
            store.folders[moved.name] = moved
        return b"OK Rename completed."

    async def cmd_subscribe(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.store.subscribed.add(self.mailbox_name(args[0]))
        return b"OK Subscribe completed."

    async def cmd_unsubscribe(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.store.subscribed.discard(self.mailbox_name(args[0]))
        return b"OK Unsubscribe completed."

    async def cmd_list(self, tag: bytes, args: list[Token], uid: bool, lsub: bool = False) -> bytes:
        selection: list[str] = []
        if args and isinstance(args[0], list):
            selection = [option.upper() for option in atoms(args[0])]
            args = args[1:]
        returns: list[str] = []
        if len(args) == 4 and isinstance(args[2], Atom) and args[2].upper() == "RETURN":
            returns = [option.upper() for option in atoms(args[3])]
            args = args[:2]
        if len(args) != 2:
            raise ParseError("LIST needs a reference and a mailbox pattern")
        store, command = self.store, b"LSUB" if lsub else b"LIST"
        reference = decode_mutf7(astring(args[0]).encode("utf-8"))
        patterns = args[1] if isinstance(args[1], list) else [args[1]]
        texts = [decode_mutf7(astring(pattern).encode("utf-8")) for pattern in patterns]
        if texts == [""] and not selection:
            self.untagged(command + b' (\\Noselect) "' + store.delimiter.encode() + b'" ""')
            return b"OK " + command + b" completed."
        matchers = [store.matcher(reference, text) for text in texts]
        subscribed_only = lsub or "SUBSCRIBED" in selection
        names = dict.fromkeys(
            store.delimiter.join(name.split(store.delimiter)[:depth])
            for name in store.folders
            for depth in range(1, name.count(store.delimiter) + 2)
        )
        for name in names:
            folder = store.folders.get(name) or Folder(name, "\\Noselect", 0)
            if not any(matcher.fullmatch(name) for matcher in matchers):
                continue
            if subscribed_only and name not in store.subscribed:
                continue
            if "SPECIAL-USE" in selection and not folder.selectable:
                continue
            if "SPECIAL-USE" in selection and folder.special_use is None:
                continue
            flags = ["\\HasChildren" if store.has_children(name) else "\\HasNoChildren"]
            if folder.special_use is not None and not lsub:
                flags.insert(0, folder.special_use)
            if "SUBSCRIBED" in selection + returns and name in store.subscribed:
                flags.append("\\Subscribed")
            self.untagged(
                command
                + b" ("
                + " ".join(flags).encode()
                + b") "
                + quote(store.delimiter)
                + b" "
                + quote(encode_mutf7(name))
            )
        return b"OK " + command + b" completed."

    async def cmd_lsub(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return await self.cmd_list(tag, args, uid, lsub=True)

    async def cmd_status(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        folder = self.existing(args[0])
        values = {
            "MESSAGES": len(folder.messages),
            "RECENT": 0,
            "UIDNEXT": folder.uidnext,
            "UIDVALIDITY": folder.uidvalidity,
            "UNSEEN": sum("\\Seen" not in message.flags for message in folder.messages),
        }
        items = [item.upper() for item in atoms(args[1])]
        if any(item not in values for item in items):
            raise ParseError("unknown STATUS item")
        data = " ".join(f"{item} {values[item]}" for item in items).encode()
        self.untagged(b"STATUS " + quote(encode_mutf7(folder.name)) + b" (" + data + b")")
        return b"OK Status completed."

    async def cmd_select(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return self.select(args, readonly=False)

    async def cmd_examine(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return self.select(args, readonly=True)

    def select(self, args: list[Token], *, readonly: bool) -> bytes:
        self.folder = None
        folder = self.existing(args[0])
        self.folder, self.readonly = folder, readonly
        self.view = [message.uid for message in folder.messages]
        self.validity = folder.uidvalidity
        keywords = {f for m in folder.messages for f in m.flags if not f.startswith("\\")}
        self.untagged(b"FLAGS " + self.flags_text([*SYSTEM_FLAGS, *keywords]))
        permanent = self.flags_text([*SYSTEM_FLAGS, *keywords]).rstrip(b")") + b" \\*)"
        permanent = b"()" if readonly else permanent
        self.untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags permitted.")
        self.untagged(b"%d EXISTS" % len(self.view))
        self.untagged(b"0 RECENT")
        unseen = [i for i, m in enumerate(folder.messages, 1) if "\\Seen" not in m.flags]
        if unseen:
            self.untagged(b"OK [UNSEEN %d] First unseen." % unseen[0])
        self.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity)
        self.untagged(b"OK [UIDNEXT %d] Predicted next UID" % folder.uidnext)
        mode = b"READ-ONLY" if readonly else b"READ-WRITE"
        return b"OK [" + mode + b"] Select completed."

    async def cmd_append(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        folder = self.existing(args[0], code="TRYCREATE")
        pending: list[tuple[bytes, list[str], dt.datetime]] = []
        rest = args[1:]
        while rest:
            flags: list[str] = []
            when = dt.datetime.now(dt.UTC).astimezone().replace(microsecond=0)
            if isinstance(rest[0], list):
                flags = atoms(rest[0])
                rest = rest[1:]
            if rest and isinstance(rest[0], bytes) and not isinstance(rest[0], Literal):
                when = parse_internaldate(rest[0].decode("ascii", "replace"))
                rest = rest[1:]
            if not rest or not isinstance(rest[0], Literal):
                raise ParseError("APPEND needs a message literal")
            if any(flag.startswith("\\") and flag not in SYSTEM_FLAGS for flag in flags):
                raise ParseError("Invalid system flag")
            pending.append((bytes(rest[0]), flags, when))
            rest = rest[1:]
        if not pending:
            raise ParseError("APPEND needs a message literal")
        if self.server.append_reply is not None:
            raise self.reply_fault(self.server.append_reply)
        uids = [folder.add(data, flags, when) for data, flags, when in pending]
        self.server._changed(folder)
        return b"OK [APPENDUID %d %s] Append completed." % (
            folder.uidvalidity,
            compress_uids(uids).encode(),
        )

    async def cmd_idle(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.write(b"+ idling\r\n")
        deadline = time.monotonic() + IDLE_LIMIT
        while True:
            if self.folder is not None:
                self.out = []
                self.sync(expunge=True)
                self.write(b"".join(self.out))
                self.out = []
            if b"\n" in self.buffer:
                line = await self.readline()
                if line.strip().upper() != b"DONE":
                    raise ParseError("Expected DONE")
                return b"OK Idle completed."
            await self.wait_data(deadline)
