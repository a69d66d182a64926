"""Turning a `DocumentEmail` into the exact bytes to transmit, and checking them."""

from __future__ import annotations

import datetime as dt
import email.errors
import email.header
import email.parser
import email.policy
import email.utils
import secrets
import time
from collections.abc import Callable
from email.headerregistry import Address
from email.message import MIMEPart

import attrs

from ._addresses import Mailbox
from ._headersafety import has_line_break
from ._message import DocumentEmail
from .errors import HeaderInjection, MailbridgeError, MessageError, MessageFormatError

__all__ = [
    "PreparedMessage",
    "check_transmittable",
    "compose",
    "new_envelope_id",
    "new_message_id",
]

# What the email package raises for input it cannot represent (HeaderParseError and the
# other email.errors are MessageError subclasses; UnicodeError is a ValueError).
_STDLIB_ERRORS = (ValueError, LookupError, email.errors.MessageError)
MAX_LINE_OCTETS = 998  # RFC 5322 section 2.1.1, without the CRLF
_PART_HEADERS = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})


@attrs.frozen
class PreparedMessage:
    """A composed message, ready to send: exactly the bytes that will be transmitted.

    `envelope_id` is sent as the DSN envelope id (RFC 3461 ENVID) when the server
    offers DSN; bounces name it, so keep it with the message (see docs/bounces.md).
    """

    data: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")
    envelope_sender: str
    recipients: tuple[str, ...]
    message_id: str
    bcc: tuple[str, ...] = ()
    smtputf8: bool = False
    mode: str = "own_smtp"  # the delivery mode it was composed for
    note: str | None = None
    envelope_id: str | None = None


def new_envelope_id() -> str:
    """A unique envelope id for DSN requests: 32 hex digits (no xtext escaping needed)."""
    return secrets.token_hex(16)


def new_message_id(domain: str) -> str:
    """A globally unique Message-ID at `domain` (RFC 5322 section 3.6.4)."""
    stamp = format(time.time_ns() // 1000, "x")
    return f"<{stamp}.{secrets.token_hex(10)}@{domain}>"


def _header_address(mailbox: Mailbox, utf8: bool) -> Address:
    local, _, domain = (mailbox.address if utf8 else mailbox.envelope_address).rpartition("@")
    return Address(display_name=mailbox.display_name, username=local, domain=domain)


def _set(part: MIMEPart, field: str, name: str, value: object) -> None:
    """Set a header and check what the email package made of it.

    The package decodes RFC 2047 encoded words in values it is given
    (`=?utf-8?q?=0D=0A?=`) and writes decoded line breaks out unencoded, so
    the check must look at the decoded value, not only at the input.
    """
    try:
        part[name] = value
        written = str(part[name])
    except _STDLIB_ERRORS as exc:
        # Python versions differ in where they refuse a decoded line break (Debian's
        # 3.11.2 raises ValueError); either way it is the caller's input, not a bug.
        raise _typed_error(field, value, exc) from None
    if has_line_break(written):
        raise HeaderInjection(field)


def _typed_error(field: str, value: object, exc: Exception) -> MessageError:
    """The typed error for what the email package refused in `field`."""
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    if has_line_break(_decoded(text)) or "CR or LF" in str(exc):
        return HeaderInjection(field)
    return MessageFormatError(field, f"cannot be written as a header: {exc}")


def _decoded(text: str) -> str:
    """`text` with RFC 2047 encoded words decoded, as the email package would read it."""
    try:
        return text + str(email.header.make_header(email.header.decode_header(text)))
    except _STDLIB_ERRORS:
        return text


def _fold(name: str, value: str, width: int = 78) -> str:
    """Fold an ASCII header value at spaces (RFC 5322 2.2.3), never inside a word."""
    lines: list[str] = []
    current = ""
    room = width - len(name) - 2
    for word in value.split(" "):
        if current and len(current) + 1 + len(word) > room:
            lines.append(current)
            current, room = word, width - 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def _text_cte(text: str) -> str | None:
    # 7-bit safe always: a server without 8BITMIME must still take the message.
    return None if text.isascii() else "quoted-printable"


def _check_structure(data: bytes, expected: list[str]) -> None:
    """Re-read the message: exactly the headers we set, and no line breaks in any value."""
    try:
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
        names = [name.lower() for name in parsed]
        parts = [
            (part, [(name, str(value)) for name, value in part.items()]) for part in parsed.walk()
        ]
    except _STDLIB_ERRORS as exc:
        raise _typed_error("message", "", exc) from None
    if names != expected:
        raise HeaderInjection("message")
    for part, headers in parts:
        for name, value in headers:
            if has_line_break(value):
                raise HeaderInjection(name)
        if part is not parsed and not {n.lower() for n, _ in headers} <= _PART_HEADERS:
            raise HeaderInjection("attachments")


def compose(
    email_: DocumentEmail,
    *,
    sender: Mailbox,
    author: Mailbox,
    reply_to: Mailbox | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> PreparedMessage:
    """Turn a `DocumentEmail` into the exact bytes to transmit.

    `sender` is the envelope sender (MAIL FROM), `author` the From header.
    `reply_to` defaults to the email's own. The Bcc recipients go into the
    envelope only, never into the message.
    """
    reply_to = reply_to or email_.reply_to
    mailboxes = (author, *email_.recipients, *((reply_to,) if reply_to else ()))
    utf8 = any(mailbox.needs_smtputf8 for mailbox in (sender, *mailboxes))
    # refold_source="none": headers set with set_raw() go out exactly as folded here.
    policy = (email.policy.SMTPUTF8 if utf8 else email.policy.SMTP).clone(refold_source="none")
    message_id = email_.message_id or new_message_id(
        (author.ascii_address or author.address).rpartition("@")[2]
    )
    date = email_.date or (now() if now else dt.datetime.now(dt.UTC).astimezone())

    # MIMEPart rather than EmailMessage: its sub-parts get no stray MIME-Version headers.
    msg = MIMEPart(policy=policy)
    _set(msg, "from", "From", _header_address(author, utf8))
    if reply_to is not None:
        _set(msg, "reply_to", "Reply-To", _header_address(reply_to, utf8))
    if email_.to:
        _set(msg, "to", "To", [_header_address(m, utf8) for m in email_.to])
    if email_.cc:
        _set(msg, "cc", "Cc", [_header_address(m, utf8) for m in email_.cc])
    _set(msg, "subject", "Subject", email_.rendered_subject())
    _set(msg, "date", "Date", email.utils.format_datetime(date))
    _set(msg, "message_id", "Message-ID", message_id)
    _set(msg, "headers", "MIME-Version", "1.0")
    for name, value in email_.headers:
        if value.isascii():
            # Verbatim, folded only at spaces: the email package would turn a long token
            # such as a Message-ID in References into an encoded word and break threading.
            try:
                msg.set_raw(name, _fold(name, value))
                written = str(msg[name])
            except _STDLIB_ERRORS as exc:
                raise _typed_error(f"headers[{name}]", value, exc) from None
            if has_line_break(written):
                raise HeaderInjection(f"headers[{name}]")
        else:
            _set(msg, f"headers[{name}]", name, value)

    try:
        body = email_.rendered_body().replace("\r\n", "\n").replace("\r", "\n")
        msg.set_content(body, subtype="plain", charset="utf-8", cte=_text_cte(body))
        html = email_.rendered_html()
        if html is not None:
            html = html.replace("\r\n", "\n").replace("\r", "\n")
            msg.add_alternative(html, subtype="html", cte=_text_cte(html))
        for attachment in email_.attachments:
            maintype, _, subtype = attachment.resolved_content_type.partition("/")
            msg.add_attachment(
                attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
            )
        data = msg.as_bytes(policy=policy)
    except MailbridgeError:
        raise
    except UnicodeError:
        raise MessageError(
            "message", "contains characters that cannot be encoded (e.g. unpaired surrogates)"
        ) from None
    except _STDLIB_ERRORS as exc:
        raise MessageFormatError("message", f"cannot be composed: {exc}") from None
    _check_structure(data, [name.lower() for name in msg])
    check_transmittable(data)
    return PreparedMessage(
        data=data,
        envelope_sender=sender.envelope_address,
        recipients=tuple(m.envelope_address for m in email_.recipients),
        message_id=message_id,
        bcc=tuple(m.envelope_address for m in email_.bcc),
        smtputf8=utf8,
        envelope_id=new_envelope_id(),
    )


_SPLIT_UP_TO = 4 * 1024 * 1024  # beyond this, do not copy the whole message into lines


def _longest_line(data: bytes) -> int:
    """Length of the longest CRLF-separated line, without splitting unless it could matter."""
    if len(data) <= MAX_LINE_OCTETS:
        return len(data)
    if len(data) <= _SPLIT_UP_TO:  # split() runs in C: ~20x faster than the loop below
        return max(map(len, data.split(b"\r\n")))
    longest = 0
    start = 0
    while True:  # bounded: every round moves past one CRLF
        end = data.find(b"\r\n", start)
        if end == -1:
            return max(longest, len(data) - start)
        longest = max(longest, end - start)
        start = end + 2


def check_transmittable(data: bytes) -> None:
    """Refuse bytes SMTP cannot carry unchanged: NUL, lines over 998 octets, bare CR or LF."""
    if b"\x00" in data:
        raise MessageFormatError("message", "contains a NUL byte")
    pairs = data.count(b"\r\n")
    if data.count(b"\r") != pairs or data.count(b"\n") != pairs:  # fast: no regex needed
        raise MessageFormatError("message", "contains a bare CR or LF")
    longest = _longest_line(data)
    if longest > MAX_LINE_OCTETS:
        raise MessageFormatError(
            "message",
            f"a line is {longest} octets long; SMTP allows {MAX_LINE_OCTETS} "
            "(encode the content, e.g. quoted-printable or base64)",
        )
