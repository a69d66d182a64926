"""Attachments: documents given as bytes or read from a file."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

import attrs

from ._headersafety import has_line_break
from .errors import HeaderInjection, MessageError

__all__ = ["Attachment"]

_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")

# Recognised by content, since file names from users are often wrong or missing.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def _check_filename(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MessageError("attachments", "an attachment needs a file name")
    if has_line_break(value):
        raise HeaderInjection("attachments")
    if "/" in value or "\\" in value:
        raise MessageError("attachments", f"file name {value!r} must not contain a path")


def _check_content(_: object, __: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes):
        raise MessageError("attachments", "attachment content must be bytes")


def _check_content_type(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not _CONTENT_TYPE.match(value):
        raise MessageError("attachments", f"{value!r} is not a content type like application/pdf")
    if value is not None and value.lower().startswith(("multipart/", "message/")):
        raise MessageError(
            "attachments", f"{value} cannot be attached as a file; use application/octet-stream"
        )


@attrs.frozen
class Attachment:
    """A file to attach: `filename`, `content` and an optional `content_type`.

    Without `content_type` the type is recognised from the content (PDF, PNG,
    JPEG, ZIP, XML) and then from the file name.
    """

    filename: str = attrs.field(validator=_check_filename)
    content: bytes = attrs.field(
        validator=_check_content, repr=lambda value: f"<{len(value)} bytes>"
    )
    content_type: str | None = attrs.field(default=None, validator=_check_content_type)

    @classmethod
    def from_path(
        cls, path: str | Path, content_type: str | None = None, filename: str | None = None
    ) -> Attachment:
        """Read a file; its base name becomes the attachment's file name."""
        file = Path(path)
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise MessageError("attachments", f"cannot read {file}: {exc.strerror}") from None
        return cls(filename or file.name, content, content_type)

    @property
    def resolved_content_type(self) -> str:
        """The content type given, or the one recognised from content and name."""
        if self.content_type:
            return self.content_type.lower()
        for signature, detected in _SIGNATURES:
            if self.content.startswith(signature):
                return detected
        head = self.content[:256].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"<?xml"):
            return "application/xml"
        guessed, _ = mimetypes.guess_type(self.filename, strict=False)
        # message/* and multipart/* parts may not be base64-encoded (RFC 2045 6.4): an .eml
        # file travels as an opaque attachment.
        if guessed and not guessed.startswith(("multipart/", "message/")):
            return guessed
        if self.content.startswith(b"PK\x03\x04"):
            return "application/zip"
        return "application/octet-stream"
