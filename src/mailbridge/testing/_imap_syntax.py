"""IMAP syntax for `FakeImapServer`: command tokens, sequence sets, dates and quoting."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

MAX_DEPTH = 16
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM_END = frozenset(b' ()"{\r\n')


class ParseError(ValueError):
    """The command is syntactically wrong: answer BAD."""


class Atom(str):
    """An unquoted atom (as opposed to a quoted string or literal, which are bytes)."""


class Literal(bytes):
    """A literal (``{n}``) as opposed to a quoted string."""


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
        elif char in b"\r\n":  # bare CR or LF outside a literal (e.g. TLS bytes)
            raise ParseError("bare CR or LF in command")
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


def astring(token: Token) -> str:
    if isinstance(token, list):
        raise ParseError("expected a string, got a list")
    return token if isinstance(token, str) else token.decode("utf-8", "replace")


def atoms(token: Token) -> list[str]:
    items = token if isinstance(token, list) else [token]
    if not all(isinstance(item, Atom) for item in items):
        raise ParseError("expected atoms")
    return [str(item) for item in items]
