"""The MIME structure of a stored message: parts, header fields, ENVELOPE, BODYSTRUCTURE."""

from __future__ import annotations

import email
import email.utils
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message

from ._imap_syntax import (
    MAX_DEPTH,
    quote,
)


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
            return (
                b"("
                + inner
                + b" "
                + subtype
                + b" "
                + self._params()
                + b" "
                + self._disposition()
                + b" NIL NIL)"
            )
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
        if extensible:  # md5, disposition, language, location (RFC 3501 7.4.2)
            fields += [b"NIL", self._disposition(), b"NIL", b"NIL"]
        return b"(" + b" ".join(fields) + b")"

    def _disposition(self) -> bytes:
        value = self.meta.get("content-disposition")
        if value is None:
            return b"NIL"
        kind = value.split(";", 1)[0].strip().lower() or "attachment"
        pairs = []
        for key, raw in (self.meta.get_params(header="content-disposition") or [])[1:]:
            text = email.utils.collapse_rfc2231_value(raw)
            pairs.append(quote(key.rstrip("*").lower()) + b" " + quote(str(text)))
        params = b"(" + b" ".join(pairs) + b")" if pairs else b"NIL"
        return b"(" + quote(kind) + b" " + params + b")"

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
