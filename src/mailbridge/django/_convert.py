"""A Django `EmailMessage` as the exact bytes a `DeliveryClient` transmits.

Django builds the MIME structure itself (`message.message()`): alternatives of any
type, attachments given as files, tuples or MIME parts, `message.encoding`. mailbridge
decides the addressing (From, Reply-To, envelope sender, Message-ID) through the
client's identity, exactly as for a `DocumentEmail`, and checks the result: no line
break smuggled into a header, no Bcc in the bytes, nothing SMTP cannot carry.
"""

from __future__ import annotations

import binascii
import copy
import email.encoders
import email.errors
import email.feedparser
import email.generator
import email.message
import email.mime.base
import email.parser
import email.policy
import email.utils
import io
import quopri
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import django

from .._addresses import Mailbox, parse_mailbox, parse_mailbox_list
from .._client import DeliveryClient
from .._headersafety import check_header_name, check_header_text, has_line_break
from .._message import DocumentEmail
from ..composer import PreparedMessage, _decoded, check_transmittable, new_message_id
from ..errors import HeaderInjection, MailbridgeError, MessageError, MessageFormatError

__all__ = ["DEFAULT_TENANT_HEADER", "prepare_django_message", "tenant_hint"]

DEFAULT_TENANT_HEADER = "X-Mailbridge-Tenant"
# Django before 6.0 builds legacy MIME objects (SafeMIMEMultipart) and takes MIMEBase
# attachments as they are: binary attachments are then written by `_binary_attachment`.
_DJANGO_BUILDS_LEGACY_MIME = django.VERSION < (6,)
# Set by Django from the message's own fields, or by mailbridge from the client's identity.
_ADDRESSING = frozenset({"from", "reply-to", "message-id"})
# Django writes the MIME structure; a header of the same name would contradict it.
_STRUCTURE = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
# Refused as for a DocumentEmail: the addressing is the client's (Sender), the receiving
# servers write the trace (Return-Path, Received), hidden recipients stay hidden.
_NOT_YOURS = frozenset({"sender", "return-path", "received", "resent-bcc"})


def _header(headers: Mapping[str, Any], name: str) -> Any:
    """The value of header `name` (any case) in Django's `extra_headers`, or None."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def tenant_hint(message: Any, header: str = DEFAULT_TENANT_HEADER) -> Any:
    """What names the tenant of a Django message: its `tenant` attribute, else the header.

    A resolver calls this to find the tenant; the header never leaves the machine (the
    backend removes it before sending).
    """
    hint = getattr(message, "tenant", None)
    if hint is None:
        hint = _header(getattr(message, "extra_headers", None) or {}, header)
    return hint


def _mailboxes(field: str, values: Iterable[Any]) -> tuple[Mailbox, ...]:
    found = tuple(parse_mailbox(field, str(value)) for value in values if value)
    for mailbox in found:  # Django would write a line break hidden in an encoded word
        if has_line_break(_decoded(mailbox.display_name)):
            raise HeaderInjection(field)
    return found


def _check_header_addresses(fields: Mapping[str, Iterable[Mailbox]]) -> None:
    """Refuse addresses with a non-ASCII local part where Django writes them into a header:
    it turns the local part into an RFC 2047 encoded word, which no mail program reads
    (RFC 2047 section 5), so the recipient would see a broken address. Bcc is not written."""
    for field, mailboxes in fields.items():
        for mailbox in mailboxes:
            if mailbox.needs_smtputf8:
                raise MessageError(
                    field,
                    f"{mailbox.address!r} has a non-ASCII local part, which a Django message "
                    "cannot carry in its headers; send it as a mailbridge DocumentEmail "
                    "(SMTPUTF8) or give the address in bcc",
                )


def _formatted(mailbox: Mailbox) -> str:
    return email.utils.formataddr((mailbox.display_name, mailbox.envelope_address))


def _checked_headers(
    headers: Mapping[Any, Any], tenant_header: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Django's `extra_headers` checked for injection: (the ones to keep, addressing ones)."""
    kept: dict[str, str] = {}
    addressing: dict[str, str] = {}
    for name, value in headers.items():
        check_header_name("headers", name)
        text = str(value)
        if has_line_break(_decoded(text)):  # also inside RFC 2047 encoded words
            raise HeaderInjection(f"headers[{name}]")
        lower = name.lower()
        if lower == tenant_header.lower():
            continue
        if lower == "bcc":
            raise MessageError("headers", "Bcc is not a header; give the message's bcc list")
        if lower in _NOT_YOURS:
            raise MessageError("headers", f"{name} is not for the application to set")
        if lower in _STRUCTURE:
            raise MessageError("headers", f"{name} is written by Django from the message parts")
        if lower in _ADDRESSING:
            addressing[lower] = text
        else:
            kept[name] = text
    return kept, addressing


def _flatten(mime: Any) -> bytes:
    """The MIME object Django built (legacy `SafeMIME*` or `email.message.EmailMessage`), with
    CRLF line ends."""
    out = io.BytesIO()
    policy = mime.policy.clone(linesep="\r\n")
    email.generator.BytesGenerator(out, mangle_from_=False, policy=policy).flatten(mime)
    return out.getvalue()


def _build(clone: Any, foreign: frozenset[int]) -> bytes:
    """Let Django build its MIME message, 7-bit; its refusals become typed errors."""
    try:
        mime = clone.message()
        _seven_bit_parts(mime, foreign)
        data = _flatten(mime)
    except MailbridgeError:
        raise
    except (ValueError, TypeError, LookupError, email.errors.MessageError) as exc:
        # Django's BadHeaderError is a ValueError; so is the email package's refusal of CR/LF.
        if "newline" in str(exc).lower() or "linefeed" in str(exc).lower():
            raise HeaderInjection("headers") from None
        raise MessageFormatError("message", f"Django could not build it: {exc}") from None
    del mime  # the bytes are all that is kept: the tree's payloads are freed
    return data if data.isascii() else _seven_bit(data)


def _binary_attachment(attachment: Any) -> Any:
    """A `(filename, bytes, "type/subtype")` attachment (not text, not a message) as the MIME
    part Django would make, its base64 written at once: Django's own way decodes the bytes
    into a str of 4-byte characters first (about 8x the file at its peak)."""
    if not (isinstance(attachment, tuple) and len(attachment) == 3):
        return attachment
    filename, content, mimetype = attachment
    if not (isinstance(content, bytes) and isinstance(mimetype, str) and "/" in mimetype):
        return attachment
    basetype, subtype = mimetype.split("/", 1)
    if basetype in ("text", "message", "multipart"):
        return attachment
    part = email.mime.base.MIMEBase(basetype, subtype)
    encoded = io.BytesIO()  # 76-character lines, as Django's encoder writes them
    for start in range(0, len(content), 57):
        encoded.write(binascii.b2a_base64(content[start : start + 57]))
    part.set_payload(encoded.getvalue().decode("ascii"))
    part["Content-Transfer-Encoding"] = "base64"
    if filename:
        name: Any = filename if str(filename).isascii() else ("utf-8", "", str(filename))
        part.add_header("Content-Disposition", "attachment", filename=name)
    return part


def _foreign_parts(message: Any) -> frozenset[int]:
    """The ids of the application's own MIME objects among the attachments: never changed."""
    found: set[int] = set()
    for attachment in message.attachments or ():
        item = attachment if isinstance(attachment, email.message.Message) else None
        if item is None and isinstance(attachment, tuple) and len(attachment) > 1:
            content = attachment[1]
            item = content if isinstance(content, email.message.Message) else None
        if item is not None:
            found.update(id(part) for part in item.walk())
    return frozenset(found)


def _seven_bit_parts(mime: Any, foreign: frozenset[int]) -> None:
    """Re-encode in place each 8-bit body part Django made (text as quoted-printable, others
    base64), so that the bytes need not be parsed and written again, and give each of its
    multiparts a boundary. The application's own
    MIME objects (`foreign`) are left alone; `_seven_bit` handles what they leave 8-bit."""
    for part in mime.walk():
        if part.is_multipart() and part.get_boundary() is None and id(part) not in foreign:
            # Without a boundary the generator joins all the part's text to pick one.
            # 128 random bits never occur in the text by chance.
            part.set_boundary(f"==============={secrets.token_hex(16)}==")
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue
        if id(part) in foreign:
            continue
        payload = part.get_payload()
        if not isinstance(payload, str) or payload.isascii():
            continue
        _reencode(part)


def _reencode(part: Any) -> None:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return
    del part["Content-Transfer-Encoding"]
    if part.get_content_maintype() == "text":
        part.set_payload(quopri.encodestring(raw).decode("ascii"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        part.set_payload(raw)
        email.encoders.encode_base64(part)


def _seven_bit(data: bytes) -> bytes:
    """`data` with every 8-bit body part re-encoded as quoted-printable (text) or base64.

    Django writes UTF-8 text as 8bit; mailbridge keeps messages 7-bit so that a server
    without 8BITMIME takes them unchanged, as `DocumentEmail` messages are. Only needed
    when the application's own MIME objects hold 8-bit parts (`_seven_bit_parts` re-encodes
    Django's before they are written).
    """
    if data.isascii():
        return data
    mime = email.message_from_bytes(data, policy=email.policy.compat32)
    for part in mime.walk():
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes) and not raw.isascii():
            _reencode(part)
    return _flatten(mime)


_CHUNK = 1 << 16


def _read_back(data: bytes) -> Any:
    """`data` parsed as a receiver reads it. Fed in chunks: parsing the bytes whole
    (`BytesParser.parsebytes`) holds a decoded copy and a 4-byte-per-character buffer."""
    parser = email.feedparser.BytesFeedParser(policy=email.policy.default)
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        parser.feed(bytes(view[start : start + _CHUNK]))
    return parser.close()


def _check_written(data: bytes) -> None:
    """Re-read the bytes: no header of any part holds a line break, no Bcc, one From."""
    try:
        parsed = _read_back(data)
        parts = [[(name, str(value)) for name, value in part.items()] for part in parsed.walk()]
    except (ValueError, LookupError, email.errors.MessageError) as exc:
        raise MessageFormatError("message", f"cannot be read back: {exc}") from None
    names = [name.lower() for name in parsed]
    del parsed
    if "bcc" in names or names.count("from") != 1 or names.count("message-id") != 1:
        raise HeaderInjection("message")
    for headers in parts:
        for name, value in headers:
            if has_line_break(value):
                raise HeaderInjection(name)


def prepare_django_message(
    client: DeliveryClient,
    message: Any,
    *,
    tenant_header: str = DEFAULT_TENANT_HEADER,
    default_from: str | None = None,
) -> PreparedMessage:
    """The bytes `client` will send for a Django `EmailMessage`, addressed by its identity.

    `message.from_email` (or a `From` extra header) is the email's `from_override` unless it
    is `default_from` (Django's DEFAULT_FROM_EMAIL, filled in when the caller gave none).
    The message itself is not changed.
    """
    kept, addressing_headers = _checked_headers(message.extra_headers or {}, tenant_header)
    check_header_text("subject", str(message.subject))
    to = _mailboxes("to", message.to)
    cc = _mailboxes("cc", message.cc)
    bcc = _mailboxes("bcc", message.bcc)
    if "reply-to" in addressing_headers:
        reply_tos = parse_mailbox_list("reply_to", addressing_headers["reply-to"])
    else:
        reply_tos = _mailboxes("reply_to", message.reply_to)
    author = addressing_headers.get("from", message.from_email)
    override = None if not author or author == default_from else parse_mailbox("from", author)
    probe = DocumentEmail(
        to=to,
        cc=cc,
        bcc=bcc,
        subject="",
        body="",
        reply_to=reply_tos[0] if reply_tos else None,
        from_override=override,
        message_id=addressing_headers.get("message-id"),
    )
    message_id = probe.message_id or new_message_id(client.identity.message_id_domain)
    addressing = client.identity.addressing(probe, message_id)
    written_reply_to: tuple[Mailbox, ...] = ()
    if addressing.reply_to is not None:
        keep_all = reply_tos and reply_tos[0].address == addressing.reply_to.address
        written_reply_to = tuple(reply_tos) if keep_all else (addressing.reply_to,)
    _check_header_addresses(
        {"to": to, "cc": cc, "reply_to": written_reply_to, "from": [addressing.author]}
    )
    headers = {**kept, "From": _formatted(addressing.author), "Message-ID": message_id}
    if written_reply_to:
        headers["Reply-To"] = ", ".join(_formatted(m) for m in written_reply_to)
    clone = copy.copy(message)  # the caller's message keeps its own headers
    clone.extra_headers = headers
    clone.reply_to = []
    if _DJANGO_BUILDS_LEGACY_MIME:
        clone.attachments = [_binary_attachment(a) for a in message.attachments or ()]
    data = _build(clone, _foreign_parts(message))
    del clone  # with it the attachments written by _binary_attachment
    _check_written(data)
    check_transmittable(data)
    recipients = probe.recipients
    prepared = PreparedMessage(
        data=data,
        envelope_sender=addressing.envelope_sender.envelope_address,
        recipients=tuple(m.envelope_address for m in recipients),
        message_id=message_id,
        bcc=tuple(m.envelope_address for m in bcc),
        smtputf8=any(m.needs_smtputf8 for m in (addressing.envelope_sender, *recipients)),
        mode=addressing.mode,
        note=addressing.note,
    )
    return attrs.evolve(prepared, data=client.signed(prepared.data, addressing.author))
