"""The in-memory mail store of `FakeImapServer`: layouts, folders, messages and UIDs."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._imap_mime import Part

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
LAYOUTS: dict[str, tuple[str, str, tuple[tuple[str, str | None], ...]]] = {
    "english": (
        "/",
        "",
        (
            ("INBOX", None),
            ("Sent", "\\Sent"),
            ("Drafts", "\\Drafts"),
            ("Trash", "\\Trash"),
            ("Junk", "\\Junk"),
            ("Archive", "\\Archive"),
        ),
    ),
    "german": (
        "/",
        "",
        (("INBOX", None), ("Gesendet", None), ("Entwürfe", None), ("Papierkorb", None)),
    ),
    "gmail": (
        "/",
        "",
        (
            ("INBOX", None),
            ("[Gmail]", "\\Noselect"),
            ("[Gmail]/All Mail", "\\All"),
            ("[Gmail]/Drafts", "\\Drafts"),
            ("[Gmail]/Sent Mail", "\\Sent"),
            ("[Gmail]/Spam", "\\Junk"),
            ("[Gmail]/Trash", "\\Trash"),
        ),
    ),
    "dotted": (
        ".",
        "INBOX.",
        (("INBOX", None), ("INBOX.Sent", "\\Sent"), ("INBOX.Drafts", None), ("INBOX.Trash", None)),
    ),
}


@dataclass
class StoredMessage:
    """One message in a folder, as the server keeps it."""

    uid: int
    data: bytes
    flags: set[str]
    internal_date: dt.datetime
    _part: Part | None = None

    @property
    def part(self) -> Part:
        if self._part is None:
            self._part = Part.parse(self.data)
        return self._part


@dataclass
class Folder:
    """A mailbox: its special-use flag, UIDVALIDITY, UIDNEXT and messages (by ascending UID)."""

    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int = 1
    messages: list[StoredMessage] = field(default_factory=list)

    @property
    def selectable(self) -> bool:
        return self.special_use != "\\Noselect"

    def add(self, data: bytes, flags: Iterable[str], internal_date: dt.datetime) -> int:
        uid = self.uidnext
        self.uidnext += 1
        self.messages.append(StoredMessage(uid, data, set(flags), internal_date))
        return uid


@dataclass
class Store:
    """The folders of one user."""

    delimiter: str
    prefix: str
    folders: dict[str, Folder]
    subscribed: set[str]

    @classmethod
    def from_layout(cls, layout: str, next_validity: Iterable[int]) -> Store:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        delimiter, prefix, names = LAYOUTS[layout]
        numbers = iter(next_validity)
        folders = {name: Folder(name, use, next(numbers)) for name, use in names}
        return cls(delimiter, prefix, folders, set(folders))

    def key(self, name: str) -> str:
        """The stored spelling of name (INBOX is case-insensitive)."""
        head, sep, rest = name.partition(self.delimiter)
        return "INBOX" + sep + rest if head.upper() == "INBOX" else name

    def get(self, name: str) -> Folder | None:
        return self.folders.get(self.key(name))

    def has_children(self, name: str) -> bool:
        return any(other.startswith(name + self.delimiter) for other in self.folders)

    def matcher(self, reference: str, pattern: str) -> re.Pattern[str]:
        full = self.key(reference + pattern)
        delimiter = re.escape(self.delimiter)
        regex = "".join(
            ".*" if char == "*" else f"[^{delimiter}]*" if char == "%" else re.escape(char)
            for char in full
        )
        return re.compile(regex)
