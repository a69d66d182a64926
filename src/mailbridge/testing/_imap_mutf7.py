"""Modified UTF-7 (RFC 3501 5.1.3): mailbox names to and from the wire."""

from __future__ import annotations

import base64

from ._imap_syntax import (
    ParseError,
)


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
