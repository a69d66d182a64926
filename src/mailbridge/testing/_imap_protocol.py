"""Wire-level helpers for `FakeImapServer`: parsing, quoting, modified UTF-7, MIME, dates."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email
import email.header
import email.utils
import hmac
import itertools
import json
import re
import ssl
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .imap import FakeImapServer

__all__ = [
    "Atom",
    "ParseError",
    "Part",
    "Token",
    "decode_mutf7",
    "encode_mutf7",
    "format_internaldate",
    "parse_internaldate",
    "parse_sequence_set",
    "quote",
    "tokenize",
]

MAX_DEPTH = 16
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM_END = frozenset(b' ()"{\r\n')


class ParseError(ValueError):
    """The command is syntactically wrong: answer BAD."""


class Atom(str):
    """An unquoted atom (as opposed to a quoted string or literal, which are bytes)."""


Token = Atom | bytes | list["Token"]


def tokenize(data: bytes) -> list[Token]:
    """Split one command (literals inline as ``{n}\\r\\n`` + n bytes) into tokens."""
    stack: list[list[Token]] = [[]]
    pos, size = 0, len(data)
    while pos < size:
        char = data[pos]
        if char == 0x20:
            pos += 1
        elif char == 0x28:  # (
            if len(stack) > MAX_DEPTH:
                raise ParseError("lists nested too deeply")
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
        elif char == 0x29:  # )
            if len(stack) == 1:
                raise ParseError("unbalanced parenthesis")
            stack.pop()
            pos += 1
        elif char == 0x22:  # "
            pos += 1
            out = bytearray()
            while True:
                if pos >= size:
                    raise ParseError("unterminated quoted string")
                char = data[pos]
                if char == 0x5C:  # backslash
                    if pos + 1 >= size or data[pos + 1] not in b'"\\':
                        raise ParseError("bad escape in quoted string")
                    out.append(data[pos + 1])
                    pos += 2
                elif char == 0x22:
                    pos += 1
                    break
                elif char in b"\r\n\0":
                    raise ParseError("line break in quoted string")
                else:
                    out.append(char)
                    pos += 1
            stack[-1].append(bytes(out))
        elif char == 0x7B:  # {
            match = re.compile(rb"\{(\d{1,10})\+?\}\r\n").match(data, pos)
            if match is None:
                raise ParseError("bad literal")
            start = match.end()
            end = start + int(match.group(1))
            if end > size:
                raise ParseError("truncated literal")
            stack[-1].append(Literal(data[start:end]))
            pos = end
        else:
            start = pos
            depth = 0
            while pos < size and (depth or data[pos] not in _ATOM_END):
                if data[pos] == 0x5B:  # [
                    depth += 1
                elif data[pos] == 0x5D and depth:  # ]
                    depth -= 1
                elif data[pos] in b"\r\n":
                    raise ParseError("line break in atom")
                pos += 1
            if depth:
                raise ParseError("unbalanced bracket")
            text = data[start:pos]
            if any(byte < 0x20 or byte > 0x7E for byte in text):
                raise ParseError("control or 8-bit character in atom")
            stack[-1].append(Atom(text.decode("ascii")))
    if len(stack) != 1:
        raise ParseError("unbalanced parenthesis")
    return stack[0]


# -- modified UTF-7 (RFC 3501 5.1.3) ------------------------------------------------------


def encode_mutf7(name: str) -> bytes:
    """A mailbox name as it goes on the wire."""
    out, pending = bytearray(), list[str]()

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.extend(b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.extend(b"&-" if char == "&" else char.encode("ascii"))
        else:
            pending.append(char)
    flush()
    return bytes(out)


def decode_mutf7(raw: bytes) -> str:
    """A mailbox name from the wire; ParseError when it is not valid modified UTF-7."""
    out, pos = [], 0
    while pos < len(raw):
        char = raw[pos]
        if char != 0x26:  # &
            if not 0x20 <= char <= 0x7E:
                raise ParseError("mailbox name is not 7-bit (use modified UTF-7)")
            out.append(chr(char))
            pos += 1
            continue
        end = raw.find(b"-", pos)
        if end < 0:
            raise ParseError("unterminated modified UTF-7 sequence")
        chunk = raw[pos + 1 : end]
        if not chunk:
            out.append("&")
        else:
            try:
                padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
                out.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
            except ValueError as exc:
                raise ParseError("bad modified UTF-7 sequence") from exc
        pos = end + 1
    return "".join(out)


# -- output ------------------------------------------------------------------------------


def quote(value: str | bytes | None) -> bytes:
    """NIL, a quoted string, or a literal when the value needs one."""
    if value is None:
        return b"NIL"
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > 1000 or any(byte > 0x7E or byte in b"\r\n\0" for byte in raw):
        return b"{%d}\r\n%s" % (len(raw), raw)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def format_internaldate(value: dt.datetime) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"``."""
    offset = value.utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    text = f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} {value:%H:%M:%S} {zone}"
    return b'"' + text.encode("ascii") + b'"'


_DATE_TIME = re.compile(
    r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


def parse_internaldate(text: str) -> dt.datetime:
    """An APPEND date-time; ParseError when malformed."""
    match = _DATE_TIME.fullmatch(text)
    months = [month.lower() for month in _MONTHS]
    if match is None or match.group(2).lower() not in months:
        raise ParseError(f"bad date-time {text!r}")
    day, _, year, hour, minute, second, sign, zh, zm = match.groups()
    offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
    try:
        return dt.datetime(
            int(year),
            months.index(match.group(2).lower()) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=dt.timezone(offset),
        )
    except ValueError as exc:
        raise ParseError(f"bad date-time {text!r}") from exc


def parse_search_date(text: str) -> dt.date:
    """A SEARCH date like ``1-Feb-2024``."""
    match = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text)
    months = [month.lower() for month in _MONTHS]
    if match is None or match.group(2).lower() not in months:
        raise ParseError(f"bad date {text!r}")
    try:
        return dt.date(int(match.group(3)), months.index(match.group(2).lower()) + 1, int(match[1]))
    except ValueError as exc:
        raise ParseError(f"bad date {text!r}") from exc


def parse_sequence_set(text: str, largest: int) -> list[tuple[int, int]]:
    """Inclusive ranges of a sequence set (``1:3,7,9:*``); ``*`` is `largest`."""
    if not re.fullmatch(r"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*", text):
        raise ParseError(f"bad sequence set {text!r}")
    ranges = []
    for item in text.split(","):
        low_text, _, high_text = item.partition(":")
        low = largest if low_text == "*" else int(low_text)
        high = low if not high_text else largest if high_text == "*" else int(high_text)
        if (low == 0 and low_text != "*") or (high == 0 and high_text not in ("", "*")):
            raise ParseError("0 is not a valid message number")
        ranges.append((min(low, high), max(low, high)))
    return ranges


def in_ranges(number: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether number lies in one of the ranges."""
    return any(low <= number <= high for low, high in ranges)


def compress_uids(uids: Sequence[int]) -> str:
    """``1:3,5`` for [1, 2, 3, 5] (keeps the given order for runs)."""
    parts: list[str] = []
    index = 0
    while index < len(uids):
        end = index
        while end + 1 < len(uids) and uids[end + 1] == uids[end] + 1:
            end += 1
        parts.append(str(uids[index]) if end == index else f"{uids[index]}:{uids[end]}")
        index = end + 1
    return ",".join(parts)


# -- MIME structure ----------------------------------------------------------------------


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line, body)."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if raw.startswith((b"\r\n", b"\n")):
        return raw[: 2 if raw.startswith(b"\r\n") else 1], raw[2 if raw[:1] == b"\r" else 1 :]
    if match is None:
        return raw, b""
    return raw[: match.end()], raw[match.end() :]


def header_lines(header: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, raw bytes of the field with folding) for each header field."""
    fields: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + line)
        else:
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            fields.append((name, line))
    return fields


def header_fields(header: bytes, names: Iterable[str], *, exclude: bool = False) -> bytes:
    """The chosen fields (or all but them), then a blank line: BODY[HEADER.FIELDS (...)]."""
    wanted = {name.lower() for name in names}
    chosen = [raw for name, raw in header_lines(header) if (name in wanted) != exclude]
    return b"".join(chosen) + b"\r\n"


def header_value(header: bytes, name: str) -> str | None:
    """The unfolded value of the first field called name."""
    for field_name, raw in header_lines(header):
        if field_name == name.lower():
            value = raw.split(b":", 1)[1] if b":" in raw else b""
            return re.sub(rb"\r?\n[ \t]", b" ", value).strip().decode("utf-8", "replace")
    return None


@dataclass
class Part:
    """One MIME entity: raw header and body, its sub-parts, its content type."""

    header: bytes
    body: bytes
    meta: Message
    children: list[Part] = field(default_factory=list)
    message: Part | None = None  # the encapsulated message of a message/rfc822 part

    @classmethod
    def parse(cls, raw: bytes, depth: int = 0, default: str = "text/plain") -> Part:
        header, body = split_message(raw)
        meta = email.message_from_bytes(header)
        if "content-type" not in meta:
            meta["Content-Type"] = default
        part = cls(header, body, meta)
        if depth > MAX_DEPTH:
            return part
        boundary = meta.get_boundary() if meta.get_content_maintype() == "multipart" else None
        if boundary:
            inner = "message/rfc822" if meta.get_content_subtype() == "digest" else "text/plain"
            delimiter = re.compile(
                rb"(?:^|\r?\n)--" + re.escape(boundary.encode("utf-8", "replace")) + rb"(--)?[ \t]*"
            )
            marks = list(delimiter.finditer(body))
            for this, following in itertools.pairwise(marks):
                if this.group(1):
                    break
                chunk = body[this.end() : following.start()]
                chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.removeprefix(b"\n")
                part.children.append(cls.parse(chunk, depth + 1, inner))
        elif meta.get_content_type() == "message/rfc822":
            part.message = cls.parse(body, depth + 1)
        return part

    def find(self, path: Sequence[int]) -> Part | None:
        """The part numbered path (RFC 3501 6.4.5)."""
        node: Part = self
        for number in path:
            if node.message is not None:
                node = node.message
            if node.children:
                if not 1 <= number <= len(node.children):
                    return None
                node = node.children[number - 1]
            elif number != 1:
                return None
        return node

    def bodystructure(self, extensible: bool = True) -> bytes:
        meta = self.meta
        if self.children:
            inner = b"".join(child.bodystructure(extensible) for child in self.children)
            subtype = quote(meta.get_content_subtype())
            if not extensible:
                return b"(" + inner + b" " + subtype + b")"
            return b"(" + inner + b" " + subtype + b" " + self._params() + b" NIL NIL NIL)"
        encoding = (meta.get("content-transfer-encoding") or "7bit").strip().lower()
        fields = [
            quote(meta.get_content_maintype()),
            quote(meta.get_content_subtype()),
            self._params(),
            quote(meta.get("content-id")),
            quote(meta.get("content-description")),
            quote(encoding),
            str(len(self.body)).encode(),
        ]
        if self.message is not None:
            fields += [
                self.message.envelope(),
                self.message.bodystructure(extensible),
                str(self.body.count(b"\n")).encode(),
            ]
        elif meta.get_content_maintype() == "text":
            fields.append(str(self.body.count(b"\n")).encode())
        if extensible:
            fields += [b"NIL", b"NIL", b"NIL", b"NIL"]
        return b"(" + b" ".join(fields) + b")"

    def _params(self) -> bytes:
        params = (self.meta.get_params() or [])[1:]
        if self.meta.get_content_maintype() == "text" and not self.meta.get_param("charset"):
            params.append(("charset", "us-ascii"))
        pairs = [quote(k.lower()) + b" " + quote(str(v)) for k, v in params if k]
        return b"(" + b" ".join(pairs) + b")" if pairs else b"NIL"

    def envelope(self) -> bytes:
        def value(name: str) -> str | None:
            return header_value(self.header, name)

        def addresses(name: str, fallback: str | None = None) -> bytes:
            text = value(name) or (value(fallback) if fallback else None)
            if not text:
                return b"NIL"
            items = []
            for display, address in email.utils.getaddresses([text]):
                if not address:
                    continue
                mailbox, _, host = address.rpartition("@") if "@" in address else (address, "", "")
                items.append(
                    b"("
                    + b" ".join(
                        [quote(display or None), b"NIL", quote(mailbox), quote(host or None)]
                    )
                    + b")"
                )
            return b"(" + b"".join(items) + b")" if items else b"NIL"

        fields = [
            quote(value("date")),
            quote(value("subject")),
            addresses("from"),
            addresses("sender", "from"),
            addresses("reply-to", "from"),
            addresses("to"),
            addresses("cc"),
            addresses("bcc"),
            quote(value("in-reply-to")),
            quote(value("message-id")),
        ]
        return b"(" + b" ".join(fields) + b")"


# -- the mail store ----------------------------------------------------------------------


class Literal(bytes):
    """A literal (``{n}``) as opposed to a quoted string."""


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


def compile_search(
    args: Sequence[Token],
    largest_seq: int,
    largest_uid: int,
) -> Callable[[int, StoredMessage], bool]:
    """A predicate (sequence number, message) for a SEARCH program; ParseError when bad."""
    position = 0

    def take() -> Token:
        nonlocal position
        if position >= len(args):
            raise ParseError("missing search argument")
        position += 1
        return args[position - 1]

    def text() -> str:
        value = take()
        if isinstance(value, list):
            raise ParseError("expected a string")
        return value if isinstance(value, str) else value.decode("utf-8", "replace")

    def one() -> Callable[[int, StoredMessage], bool]:
        token = take()
        if isinstance(token, list):
            return compile_search(token, largest_seq, largest_uid)
        if not isinstance(token, Atom):
            raise ParseError("expected a search key")
        key = token.upper()
        if re.fullmatch(r"[\d*:,]+", key):
            seqs = parse_sequence_set(key, largest_seq)
            return lambda seq, msg: in_ranges(seq, seqs)
        flag_keys = {"ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN"}
        if key in flag_keys or (key.startswith("UN") and key[2:] in flag_keys):
            flag = "\\" + key.removeprefix("UN").capitalize()
            wanted = not key.startswith("UN")
            return lambda seq, msg: (flag in msg.flags) == wanted
        if key in ("KEYWORD", "UNKEYWORD"):
            word, wanted = text().lower(), key == "KEYWORD"
            return lambda seq, msg: (word in {f.lower() for f in msg.flags}) == wanted
        if key in ("ALL", "OLD"):
            return lambda seq, msg: True
        if key in ("NEW", "RECENT"):
            return lambda seq, msg: False
        if key in ("HEADER", "FROM", "TO", "CC", "BCC", "SUBJECT"):
            name = text() if key == "HEADER" else key
            needle = text().lower()

            def header_has(seq: int, msg: StoredMessage) -> bool:
                value = header_value(msg.part.header, name)
                if value is None:
                    return False
                try:
                    decoded = str(email.header.make_header(email.header.decode_header(value)))
                except (ValueError, LookupError):
                    decoded = value
                return needle in value.lower() or needle in decoded.lower()

            return header_has
        if key in ("BODY", "TEXT"):
            needle_bytes = text().lower().encode("utf-8")
            whole = key == "TEXT"
            return lambda seq, msg: needle_bytes in (msg.data if whole else msg.part.body).lower()
        if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            day = parse_search_date(text())
            compares: dict[str, Callable[[dt.date], bool]] = {
                "BEFORE": lambda d: d < day,
                "ON": lambda d: d == day,
                "SINCE": lambda d: d >= day,
            }
            compare = compares[key.removeprefix("SENT")]

            def date_ok(seq: int, msg: StoredMessage) -> bool:
                if not key.startswith("SENT"):
                    return compare(msg.internal_date.date())
                value = header_value(msg.part.header, "date")
                try:
                    sent = email.utils.parsedate_to_datetime(value or "")
                except (TypeError, ValueError):
                    return False
                return compare(sent.date())

            return date_ok
        if key in ("LARGER", "SMALLER"):
            size_text = text()
            if not size_text.isdigit():
                raise ParseError("expected a number")
            size, larger = int(size_text), key == "LARGER"
            return lambda seq, msg: len(msg.data) > size if larger else len(msg.data) < size
        if key == "UID":
            uids = parse_sequence_set(text(), largest_uid)
            return lambda seq, msg: in_ranges(msg.uid, uids)
        if key == "NOT":
            negated = one()
            return lambda seq, msg: not negated(seq, msg)
        if key == "OR":
            left, right = one(), one()
            return lambda seq, msg: left(seq, msg) or right(seq, msg)
        raise ParseError(f"unknown search key {token}")

    keys = []
    while position < len(args):
        keys.append(one())
    if not keys:
        raise ParseError("empty search program")
    return lambda seq, msg: all(test(seq, msg) for test in keys)


# -- one client connection ---------------------------------------------------------------


MAX_LINE = 65_536
MAX_LITERALS = 1000
MAX_COMMANDS = 1_000_000
IDLE_LIMIT = 1800.0
_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_TAG = re.compile(rb"[!#$&',-.0-9:;<=>?@A-Z^_`a-z|~\[\]/]+")
_FETCH_ITEM = re.compile(r"(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?", re.IGNORECASE)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_STATES = {
    "any": {"CAPABILITY", "NOOP", "LOGOUT", "ID"},
    "unauth": {"STARTTLS", "LOGIN", "AUTHENTICATE"},
    "auth": {
        *("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE"),
        *("LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE"),
    },
    "selected": {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY"}
    | {"MOVE", "UID"},
}


class Closed(Exception):
    """The connection is gone, or must be closed now."""


class No(Exception):
    """A semantic error: the tagged answer is NO with this text."""


def astring(token: Token) -> str:
    if isinstance(token, list):
        raise ParseError("expected a string, got a list")
    return token if isinstance(token, str) else token.decode("utf-8", "replace")


def atoms(token: Token) -> list[str]:
    items = token if isinstance(token, list) else [token]
    if not all(isinstance(item, Atom) for item in items):
        raise ParseError("expected atoms")
    return [str(item) for item in items]


class Session(asyncio.Protocol):
    """One IMAP connection: reads commands, answers them from the server's stores."""

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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.tls = transport.get_extra_info("sslcontext") is not None
        self.task = asyncio.get_running_loop().create_task(self.run())

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

    # -- the command loop ---------------------------------------------------------

    async def run(self) -> None:
        try:
            self.write(b"* OK [CAPABILITY " + self.capabilities() + b"] FakeImapServer ready.\r\n")
            for _ in range(MAX_COMMANDS):
                raw = await self.read_command()
                if raw is not None and not await self.execute(raw):
                    break
        except (Closed, ConnectionError, ssl.SSLError):
            pass
        except Exception:  # never let a bug kill more than this connection
            self.server.errors.append(traceback.format_exc())
            self.write(b"* BYE Internal server error\r\n")
        finally:
            self.server._sessions.discard(self)
            if self.transport is not None:
                self.transport.close()

    async def read_command(self) -> bytes | None:
        line = await self.readline()
        first = line.split(b" ", 2)
        tag = first[0].strip()
        name = first[1].strip().upper().decode("ascii", "replace") if len(first) > 1 else ""
        sub = first[2].split(b" ", 1)[0].strip() if len(first) > 2 else b""
        sub_name = sub.upper().decode("ascii", "replace")
        drop = (self.server.drop_on or "").upper()
        if drop and drop in {name, sub_name if name == "UID" else name, f"{name} {sub_name}"}:
            raise Closed
        raw = bytearray(line)
        for _ in range(MAX_LITERALS):
            match = _LITERAL_AT_END.search(raw)
            if match is None:
                return bytes(raw)
            size, plus = int(match.group(1)), bool(match.group(2))
            if size > self.server.max_literal:
                if plus:
                    self.write(b"* BYE Literal too big\r\n")
                    raise Closed
                self.write(tag + b" NO [TOOBIG] Literal too big\r\n")
                return None
            if not plus:
                self.write(b"+ Ready for literal data\r\n")
            raw += await self.readexactly(size)
            raw += await self.readline()
        self.write(b"* BYE Too many literals\r\n")
        raise Closed

    async def execute(self, raw: bytes) -> bool:
        """Run one command; False when the connection is to be closed."""
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not line.strip():
            return True
        guess = line.split(b" ", 1)[0]
        tag = guess if _TAG.fullmatch(guess) else b"*"
        try:
            tokens = tokenize(line)
        except ParseError as exc:
            self.write(tag + b" BAD " + str(exc).encode() + b"\r\n")
            return True
        if len(tokens) < 2 or not isinstance(tokens[0], Atom) or not isinstance(tokens[1], Atom):
            self.write(tag + b" BAD Missing tag or command\r\n")
            return True
        name, args = tokens[1].upper(), tokens[2:]
        state = "selected" if self.folder else "auth" if self.user else "unauth"
        allowed = (
            _STATES["any"]
            | {
                "unauth": _STATES["unauth"],
                "auth": _STATES["auth"],
                "selected": _STATES["auth"] | _STATES["selected"],
            }[state]
        )
        handler = getattr(self, "cmd_" + name.lower(), None)
        uid = False
        if name == "UID" and name in allowed:
            if not args or not isinstance(args[0], Atom):
                handler = None
            else:
                name, args, uid = args[0].upper(), args[1:], True
                handler = getattr(self, "cmd_" + name.lower(), None)
                if name not in {"FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE"}:
                    handler = None
        self.out = []
        if handler is None:
            result = b"BAD Unknown command " + name.encode()
        elif name not in allowed and not uid:
            result = b"BAD Command not allowed in this state"
        else:
            try:
                result = await handler(tag, args, uid)
            except ParseError as exc:
                result = b"BAD " + str(exc).encode("utf-8", "replace")
            except No as exc:
                result = b"NO " + str(exc).encode("utf-8", "replace")
            except (IndexError, ValueError) as exc:
                result = b"BAD Invalid arguments: " + str(exc).encode("utf-8", "replace")
        if self.folder is not None and name not in {"LOGOUT", "STARTTLS"}:
            self.sync(expunge=name not in {"FETCH", "STORE", "SEARCH"} or uid)
        self.write(b"".join(self.out))
        self.out = []
        if self.server.stall_seconds and not self.closed:
            await asyncio.sleep(self.server.stall_seconds)
        self.write(tag + b" " + result + b"\r\n")
        if name == "STARTTLS" and result.startswith(b"OK"):
            await self.start_tls()
        return name != "LOGOUT"

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

    async def start_tls(self) -> None:
        self.buffer.clear()  # plaintext sent before the handshake must not count (CVE-2011-0411)
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        context = self.server._server_context
        transport = await loop.start_tls(self.transport, self, context, server_side=True)
        if transport is None:
            raise Closed
        self.transport, self.tls = transport, True

    # -- helpers --------------------------------------------------------------------

    def capabilities(self) -> bytes:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "IDLE", "NAMESPACE", "UIDPLUS"]
        caps += ["MOVE", "SPECIAL-USE", "CHILDREN", "LIST-EXTENDED", "MULTIAPPEND", "UNSELECT"]
        if self.server.tls == "starttls" and not self.tls:
            caps += ["STARTTLS", "LOGINDISABLED"]
        elif self.user is None:
            caps += ["AUTH=PLAIN", "AUTH=XOAUTH2"]
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

    # -- commands: any state ------------------------------------------------------

    async def cmd_capability(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.untagged(b"CAPABILITY " + self.capabilities())
        return b"OK Capability completed."

    async def cmd_noop(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return b"OK NOOP completed."

    async def cmd_check(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return b"OK Check completed."

    async def cmd_logout(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.untagged(b"BYE Logging out")
        return b"OK Logout completed."

    async def cmd_id(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.untagged(b'ID ("name" "FakeImapServer")')
        return b"OK ID completed."

    # -- commands: not authenticated ----------------------------------------------

    async def cmd_starttls(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if self.server.tls != "starttls" or self.tls:
            raise ParseError("STARTTLS not available")
        return b"OK Begin TLS negotiation now."

    def check_plaintext(self) -> None:
        if self.server.tls == "starttls" and not self.tls:
            raise No(
                "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
                "(SSL/TLS) connections."
            )

    def logged_in(self, user: str) -> bytes:
        self.user = user
        return b"OK [CAPABILITY " + self.capabilities() + b"] Logged in"

    def password_ok(self, user: str, password: str) -> bool:
        expected = self.server.users.get(user)
        if self.server.login_reply is not None or expected is None:
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    def failed(self) -> No:
        reply = self.server.login_reply
        if reply is not None:
            return self.reply_fault(reply)
        return No("[AUTHENTICATIONFAILED] Authentication failed.")

    async def cmd_login(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if len(args) != 2:
            raise ParseError("LOGIN needs user name and password")
        self.check_plaintext()
        user, password = astring(args[0]), astring(args[1])
        if self.password_ok(user, password):
            return self.logged_in(user)
        raise self.failed()

    async def sasl_response(self, args: list[Token], challenge: bytes = b"") -> bytes:
        if len(args) > 1 and challenge == b"":
            text = astring(args[1])
        else:
            self.write(b"+ " + base64.b64encode(challenge) + b"\r\n")
            text = (await self.readline()).decode("ascii", "replace").strip()
        if text == "*":
            raise ParseError("Authentication aborted by client")
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ParseError("Invalid base64 data in SASL response") from None

    async def cmd_authenticate(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if not args or not isinstance(args[0], Atom):
            raise ParseError("AUTHENTICATE needs a mechanism")
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", "XOAUTH2"):
            raise No("Unsupported authentication mechanism.")
        self.check_plaintext()
        blob = await self.sasl_response(args)
        if mechanism == "PLAIN":
            parts = blob.split(b"\0")
            if len(parts) != 3:
                raise ParseError("Invalid PLAIN response")
            user, password = (part.decode("utf-8", "replace") for part in parts[1:])
            if self.password_ok(user, password):
                return self.logged_in(user)
            raise self.failed()
        fields = dict(
            part.split("=", 1)
            for part in blob.decode("utf-8", "replace").split("\x01")
            if "=" in part
        )
        user, auth = fields.get("user", ""), fields.get("auth", "")
        token = self.server.tokens.get(user)
        valid = token is not None and hmac.compare_digest(auth.encode(), f"Bearer {token}".encode())
        if self.server.login_reply is None and valid:
            return self.logged_in(user)
        error = {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        self.write(b"+ " + base64.b64encode(json.dumps(error).encode()) + b"\r\n")
        await self.readline()
        raise self.failed()

    # -- commands: authenticated --------------------------------------------------

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

    # -- commands: selected -------------------------------------------------------

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
        if args and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
            if astring(args[1]).upper() not in ("UTF-8", "US-ASCII"):
                raise No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            args = args[2:]
        test = compile_search(args, len(self.view), self.view[-1] if self.view else 0)
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
