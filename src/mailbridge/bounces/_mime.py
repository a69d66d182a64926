"""A small, bounded MIME reader for reports: headers, parts and decoded text.

The standard library's parser recurses once per nesting level and turns
`message/delivery-status` bodies into sub-messages; a report needs neither.
This reader keeps every part's raw body, stops descending at `MAX_DEPTH`,
reads at most `MAX_PARTS` parts and `MAX_FIELDS` header fields per part, and
never looks inside a returned message except for its header section.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.errors
import email.header
import email.message
import email.utils
import quopri
import re

import attrs

__all__ = [
    "MAX_BYTES",
    "RETURNED_TYPES",
    "Entity",
    "decode_words",
    "parse_entity",
    "parse_fields",
    "returned_fields",
]

MAX_BYTES = 4 * 1024 * 1024  # a report is read up to here; the rest is the returned original
MAX_DEPTH = 8
MAX_PARTS = 64
MAX_FIELDS = 500
MAX_FIELD = 16 * 1024
_FIELD = re.compile(rb"^([!-9;-~]{1,76})[ \t]*:(.*)$")
_HEADER_END = re.compile(rb"\n\n")
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(octet for octet in range(256) if octet not in _BASE64)


def normalize(raw: bytes) -> bytes:
    """CRLF and lone CR become LF; at most `MAX_BYTES`."""
    return raw[:MAX_BYTES].replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def parse_fields(block: bytes, utf8: bool = False) -> list[tuple[str, str]]:
    """Header fields (name lower-cased, value unfolded) of a header block; bounded."""
    fields: list[tuple[str, str]] = []
    for line in block.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            if len(value) < MAX_FIELD:
                fields[-1] = (name, value + " " + _text(line.strip(), utf8))
            continue
        match = _FIELD.match(line)
        if match is None:
            continue
        if len(fields) >= MAX_FIELDS:
            break
        fields.append((match.group(1).decode("ascii").lower(), _text(match.group(2).strip(), utf8)))
    return [(name, value[:MAX_FIELD]) for name, value in fields]


def _text(data: bytes, utf8: bool) -> str:
    try:
        return data.decode("utf-8" if utf8 else "ascii")
    except UnicodeDecodeError:
        return data.decode("utf-8" if not utf8 else "latin-1", errors="replace")


def decode_words(value: str) -> str:
    """An RFC 2047 header value as text (unknown charsets and bad encodings tolerated)."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, ValueError, UnicodeError, email.errors.MessageError):  # CharsetError
        return value


@attrs.frozen
class Entity:
    """One MIME entity: its header fields, content type and parameters, raw body, children."""

    fields: tuple[tuple[str, str], ...]
    content_type: str
    params: dict[str, str] = attrs.field(eq=False)
    body: bytes = attrs.field(repr=False)
    children: tuple[Entity, ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field called `name` (lower case)."""
        return next((value for field, value in self.fields if field == name), default)

    def get_all(self, name: str) -> list[str]:
        """Every field called `name` (lower case)."""
        return [value for field, value in self.fields if field == name]

    def walk(self) -> list[Entity]:
        """This entity and all its descendants, depth first (already bounded at parse time)."""
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found

    def decoded(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone (broken encodings: best effort)."""
        encoding = (self.get("content-transfer-encoding") or "").strip().lower()
        if encoding == "base64":
            cleaned = self.body.translate(None, _NOT_BASE64)
            if len(cleaned) % 4 == 1:  # a lone last character carries no whole octet
                cleaned = cleaned[:-1]
            cleaned += b"=" * (-len(cleaned) % 4)  # the padding was taken out with the rest
            try:
                return base64.b64decode(cleaned)
            except (binascii.Error, ValueError):
                return b""
        if encoding == "quoted-printable":
            return quopri.decodestring(self.body)
        return self.body

    def text(self) -> str:
        """The decoded body as text, in its declared charset (UTF-8, then Latin-1 when unknown)."""
        data = self.decoded()
        charset = self.params.get("charset", "").strip().strip('"') or "utf-8"
        try:
            codecs.lookup(charset)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            charset = "utf-8"
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        except Exception:
            return data.decode("latin-1")


def _content_type(value: str | None, parent: str) -> tuple[str, dict[str, str]]:
    default = "message/rfc822" if parent == "multipart/digest" else "text/plain"
    if not value:
        return default, {}
    carrier = email.message.Message()
    try:
        carrier["Content-Type"] = value
        ctype = carrier.get_content_type()
        params = {}
        for key, param in carrier.get_params(failobj=[])[1:]:
            text = email.utils.collapse_rfc2231_value(param)
            params[key.lower()] = str(text)[:1000]
    except (ValueError, LookupError, UnicodeError, email.errors.MessageError):
        return default, {}
    return ctype, params


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines (the preamble and epilogue dropped)."""
    delimiter = b"\n--" + boundary
    data = b"\n" + body
    parts: list[bytes] = []
    position = data.find(delimiter)
    while position != -1 and len(parts) <= MAX_PARTS:
        line_end = data.find(b"\n", position + 1)
        line = data[position + len(delimiter) : line_end if line_end != -1 else len(data)]
        if line.startswith(b"--") or line_end == -1:
            break
        following = data.find(delimiter, line_end)
        parts.append(data[line_end + 1 : following if following != -1 else len(data)])
        position = following
    return parts


def parse_entity(
    data: bytes, *, depth: int = 0, parent: str = "", budget: list[int] | None = None
) -> Entity:
    """Parse normalized (LF) bytes into an `Entity` tree, bounded in depth and part count."""
    budget = budget if budget is not None else [MAX_PARTS]
    match = _HEADER_END.search(data)
    if data.startswith(b"\n"):
        head, body = b"", data[1:]
    elif match is None:
        head, body = data, b""
    else:
        head, body = data[: match.start()], data[match.end() :]
    fields = parse_fields(head)
    ctype, params = _content_type(next((v for k, v in fields if k == "content-type"), None), parent)
    children: list[Entity] = []
    boundary = params.get("boundary", "")
    if ctype.startswith("multipart/") and boundary and depth < MAX_DEPTH:
        encoded = boundary.encode("utf-8", "replace")
        for part in _split(body, encoded):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            children.append(parse_entity(part, depth=depth + 1, parent=ctype, budget=budget))
    return Entity(tuple(fields), ctype, params, body, tuple(children))


RETURNED_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)


def returned_fields(entity: Entity) -> list[tuple[str, str]]:
    """The header fields of a returned original message (its body is never read)."""
    data = entity.decoded()
    end = _HEADER_END.search(data)
    return parse_fields(data[: end.start()] if end else data, utf8=True)
