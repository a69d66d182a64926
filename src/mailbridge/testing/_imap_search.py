"""IMAP SEARCH: compiling a search program into a predicate on messages."""

from __future__ import annotations

import codecs
import datetime as dt
import email.header
import email.utils
import re
from collections.abc import Callable, Sequence

from ._imap_mime import header_value
from ._imap_store import StoredMessage
from ._imap_syntax import (
    Atom,
    ParseError,
    Token,
    in_ranges,
    parse_search_date,
    parse_sequence_set,
)


def search_codec(charset: str | None) -> str | None:
    """The codec for a SEARCH CHARSET; None when unknown (BADCHARSET).

    Like Dovecot and Cyrus: UTF-8 when none is given (8-bit strings included),
    US-ASCII read as UTF-8, and any other charset the server can convert.
    """
    if charset is None or charset.upper() in ("UTF-8", "US-ASCII"):
        return "utf-8"
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None


def compile_search(
    args: Sequence[Token],
    largest_seq: int,
    largest_uid: int,
    codec: str = "utf-8",
) -> Callable[[int, StoredMessage], bool]:
    """A predicate (sequence number, message) for a SEARCH program; ParseError when bad.

    8-bit strings (quoted or literal) are decoded with `codec`; bytes that are
    not valid in it make the search key invalid (BAD), as in Dovecot.
    """
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
        if isinstance(value, str):
            return value
        try:
            return value.decode(codec)
        except UnicodeDecodeError:
            raise ParseError("Invalid search key") from None

    def one() -> Callable[[int, StoredMessage], bool]:
        token = take()
        if isinstance(token, list):
            return compile_search(token, largest_seq, largest_uid, codec)
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
