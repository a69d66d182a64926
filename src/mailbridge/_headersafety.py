"""Keeping caller text from turning into extra header lines (header injection)."""

from __future__ import annotations

import re

from .errors import HeaderInjection, MessageError

__all__ = ["LINE_BREAKS", "check_header_name", "check_header_text"]

# CR, LF and NUL, plus everything else str.splitlines() treats as a line break: the email
# package refuses those late with a bare ValueError (Word's Shift+Enter is \x0b).
LINE_BREAKS = frozenset("\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ":"


def has_line_break(value: str) -> bool:
    """True when `value` holds a character that could end a header line."""
    return any(char in LINE_BREAKS for char in value)


def check_header_text(field: str, value: str) -> None:
    """Raise `HeaderInjection` naming `field` when `value` holds a line break or NUL."""
    if has_line_break(value):
        raise HeaderInjection(field)


def check_header_name(field: str, name: object) -> None:
    """Raise `MessageError` when `name` is not a valid header field name."""
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise MessageError(field, f"{name!r} is not a valid header name")
