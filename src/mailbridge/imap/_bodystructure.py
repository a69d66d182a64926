"""Walking a BODYSTRUCTURE (RFC 3501 section 7.4.2) as imapclient returns it, distrusting it.

imapclient turns only the outermost multipart into ``([child, ...], subtype, ...)``;
a multipart inside a forwarded message (message/rfc822) stays as the server sent it,
``(child, child, ..., subtype, ...)``. Both shapes are walked here, without recursion
and within fixed bounds; whatever cannot be walked is reported, never dropped.
"""

from __future__ import annotations

import email.errors
import email.header
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["MAX_MIME_DEPTH", "MAX_PARTS", "Part", "text", "walk"]

MAX_MIME_DEPTH = 10  # multiparts and forwarded messages inside each other
MAX_PARTS = 500  # leaf parts looked at in one message
MAX_PARAMS = 64  # parameter pairs read from one part
_CONTINUATION = re.compile(r"^([a-z0-9_.-]+)\*(\d{1,2})(\*?)$")


@attrs.frozen
class Part:
    """One leaf part: its section number ("1", "2.1", ...), type, encoding, name and size."""

    section: str
    content_type: str
    encoding: str
    filename: str | None
    size: int | None = None  # encoded size as the server declared it; None when not given


def text(value: Any) -> str:
    """A BODYSTRUCTURE/ENVELOPE string, RFC 2047 encoded words decoded; '' for NIL."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        raw = value.decode("utf-8", "replace")
    elif isinstance(value, str):
        raw = value
    else:
        return ""  # a list where a string belongs: hostile or broken
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (UnicodeError, ValueError, LookupError, email.errors.MessageError):
        return raw  # a broken encoded word in someone's mail: keep the raw text


def _percent_decode(value: str, charset: str) -> str:
    try:
        return urllib.parse.unquote(value, encoding=charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset named by the sender
        return urllib.parse.unquote(value, errors="replace")


def params(value: Any) -> dict[str, str]:
    """Body parameters by lower-case name; RFC 2231 values and continuations decoded."""
    if not isinstance(value, (tuple, list)):
        return {}
    items = list(value[: 2 * MAX_PARAMS])
    plain: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for key, raw in zip(items[::2], items[1::2], strict=False):
        name, data = text(key).lower(), text(raw)
        continued = _CONTINUATION.match(name)
        if continued is not None:  # name*0*=utf-8''a%20b; name*1="c"
            pieces.setdefault(continued[1], {})[int(continued[2])] = (data, bool(continued[3]))
        elif name.endswith("*"):  # name*=utf-8''a%20b
            charset, _, rest = data.partition("'")
            _, _, encoded = rest.partition("'")
            plain[name.rstrip("*")] = _percent_decode(encoded or data, charset)
        else:
            plain.setdefault(name, data)
    for name, numbered in pieces.items():
        charset = ""
        joined = []
        for index in sorted(numbered):
            data, is_encoded = numbered[index]
            if index == 0 and is_encoded:
                charset, _, rest = data.partition("'")
                data = rest.partition("'")[2]
            joined.append(_percent_decode(data, charset) if is_encoded else data)
        plain[name] = "".join(joined)  # RFC 2231 wins over a plain fallback value
    return plain


def _children(node: Sequence[Any]) -> list[Any] | None:
    """The parts of a multipart node in either shape, or None for a leaf."""
    if isinstance(node[0], list):  # imapclient's shape: ([child, ...], subtype, ...)
        return node[0]
    if isinstance(node[0], tuple):  # the server's shape: (child, child, ..., subtype, ...)
        children = []
        for item in node:
            if not isinstance(item, (tuple, list)):
                break
            children.append(item)
        return children
    return None


def _leaf(node: Sequence[Any], section: str) -> Part:
    maintype, subtype = text(node[0]).lower(), text(node[1]).lower()
    filename = params(node[2]).get("name") or None
    for extra in node[7:]:  # the disposition is among the extension data
        if isinstance(extra, (tuple, list)) and len(extra) == 2 and isinstance(extra[0], bytes):
            filename = params(extra[1]).get("filename") or filename
    size = node[6] if isinstance(node[6], int) and node[6] >= 0 else None
    return Part(section, f"{maintype}/{subtype}", text(node[5]).lower(), filename, size)


def walk(structure: Any) -> tuple[list[Part], list[str]]:
    """The leaf parts of `structure`, and what could not be walked (by section).

    Forwarded messages (message/rfc822) are entered, so an invoice forwarded as
    an attachment is found too.
    """
    parts: list[Part] = []
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(structure, "", 0)]
    while stack:
        node, prefix, depth = stack.pop()
        section = prefix.rstrip(".") or "1"
        if depth > MAX_MIME_DEPTH:
            problems.append(f"part {section}: nested deeper than {MAX_MIME_DEPTH} levels")
            continue
        if not isinstance(node, (tuple, list)) or len(node) < 2:
            problems.append(f"part {section}: the server's BODYSTRUCTURE is malformed")
            continue
        children = _children(node)
        if children is not None:
            if not children:
                problems.append(f"part {section}: a multipart without parts")
            numbered = [(child, f"{prefix}{n}.") for n, child in enumerate(children, start=1)]
            stack.extend((child, number, depth + 1) for child, number in reversed(numbered))
            continue
        if len(node) < 7 or not isinstance(node[0], bytes) or not isinstance(node[1], bytes):
            problems.append(f"part {section}: the server's BODYSTRUCTURE is malformed")
            continue
        if (text(node[0]).lower(), text(node[1]).lower()) == ("message", "rfc822"):
            inner = node[8] if len(node) > 8 else None
            if isinstance(inner, (tuple, list)) and inner and _children(inner) is not None:
                stack.append((inner, f"{section}.", depth + 1))
            else:  # a forwarded single-part message: its body is part <section>.1
                stack.append((inner, f"{section}.1.", depth + 1))
            continue
        if len(parts) >= MAX_PARTS:
            problems.append(f"more than {MAX_PARTS} parts: the rest were not searched")
            break
        parts.append(_leaf(node, section))
    return parts, problems
