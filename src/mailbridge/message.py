"""Composing document emails: recipients, placeholders, attachments and safe headers."""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import html as html_lib
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Mapping
from email.headerregistry import Address
from email.message import MIMEPart
from typing import Any

import attrs

from .addresses import Mailbox, parse_mailbox, parse_mailbox_list
from .attachments import Attachment
from .errors import HeaderInjection, MessageError, MessageFormatError, MissingPlaceholder

__all__ = ["DocumentEmail", "PreparedMessage", "compose", "render_placeholders"]

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ":"
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "Sender",
        "Reply-To",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Return-Path",
        "Received",
    )
)
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")
MAX_LINE_OCTETS = 998  # RFC 5322 section 2.1.1, without the CRLF


def render_placeholders(
    field: str,
    template: str,
    values: Mapping[str, Any],
    escape: Callable[[str], str] | None = None,
) -> str:
    """Replace each `{name}` in `template`; `{{` and `}}` stand for literal braces.

    Only plain names are allowed (no `{a.b}` or `{a[0]}`, which would reach into
    objects); a name without a value raises `MissingPlaceholder`.
    """
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise MessageError(field, f"{exc}; write {{{{ or }}}} for a literal brace") from None
    out: list[str] = []
    for literal, name, spec, conversion in pieces:
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier() or conversion or (spec and "{" in spec):
            raise MessageError(
                field,
                f"invalid placeholder {{{name}}}: use a plain name such as {{invoice_number}}",
            )
        if name not in values:
            raise MissingPlaceholder(field, name)
        try:
            text = format(values[name], spec) if spec else str(values[name])
        except (TypeError, ValueError) as exc:
            raise MessageError(field, f"placeholder {{{name}:{spec}}}: {exc}") from None
        out.append(escape(text) if escape else text)
    return "".join(out)


def _to(value: Any) -> tuple[Mailbox, ...]:
    return parse_mailbox_list("to", value)


def _cc(value: Any) -> tuple[Mailbox, ...]:
    return parse_mailbox_list("cc", value)


def _bcc(value: Any) -> tuple[Mailbox, ...]:
    return parse_mailbox_list("bcc", value)


def _reply_to(value: Any) -> Mailbox | None:
    return None if value is None else parse_mailbox("reply_to", value)


def _from_override(value: Any) -> Mailbox | None:
    return None if value is None else parse_mailbox("from_override", value)


def _placeholders(value: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(value)
    except (TypeError, ValueError):
        raise MessageError("placeholders", "must be a mapping of names to values") from None


def _attachments(value: Iterable[Attachment]) -> tuple[Attachment, ...]:
    items = tuple(value)
    for item in items:
        if not isinstance(item, Attachment):
            raise MessageError("attachments", f"expected Attachment, got {type(item).__name__}")
    return items


def _headers(value: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    items = []
    for name, header_value in dict(value).items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise MessageError("headers", f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise MessageError(
                "headers", f"{name} is set by mailbridge; use the DocumentEmail field instead"
            )
        if not isinstance(header_value, str):
            raise MessageError(f"headers[{name}]", "header values must be strings")
        if any(ch in header_value for ch in _FORBIDDEN_IN_HEADERS):
            raise HeaderInjection(f"headers[{name}]")
        items.append((name, header_value))
    return tuple(items)


def _check_header_text(field: str, value: str) -> None:
    if any(ch in value for ch in _FORBIDDEN_IN_HEADERS):
        raise HeaderInjection(field)


def _check_str(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise MessageError(attribute.name, f"must be a string, got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class DocumentEmail:
    """An email carrying documents, as the send dialog describes it.

    `to`, `cc` and `bcc` take a list or one string of comma- or
    semicolon-separated addresses. `subject`, `body` and `html` may contain
    `{placeholders}` filled from `placeholders` (HTML-escaped in `html`).
    `message_id` and `date` are generated when sending unless given.
    Everything is validated on construction: bad input raises a `MessageError`
    naming the field.
    """

    to: tuple[Mailbox, ...] = attrs.field(converter=_to)
    cc: tuple[Mailbox, ...] = attrs.field(default=(), converter=_cc)
    bcc: tuple[Mailbox, ...] = attrs.field(default=(), converter=_bcc)
    subject: str = attrs.field(validator=_check_str)
    body: str = attrs.field(validator=_check_str)
    html: str | None = attrs.field(default=None)
    attachments: tuple[Attachment, ...] = attrs.field(default=(), converter=_attachments)
    placeholders: Mapping[str, Any] = attrs.field(factory=dict, converter=_placeholders)
    reply_to: Mailbox | None = attrs.field(default=None, converter=_reply_to)
    from_override: Mailbox | None = attrs.field(default=None, converter=_from_override)
    headers: tuple[tuple[str, str], ...] = attrs.field(factory=dict, converter=_headers)
    message_id: str | None = attrs.field(default=None)
    date: dt.datetime | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if not (self.to or self.cc or self.bcc):
            raise MessageError("to", "at least one recipient is needed")
        if self.html is not None and not isinstance(self.html, str):
            raise MessageError("html", "must be a string")
        _check_header_text("subject", self.subject)
        self.rendered_subject()
        self.rendered_body()
        self.rendered_html()
        if self.message_id is not None:
            _check_header_text("message_id", self.message_id)
            if not re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", self.message_id):
                raise MessageError("message_id", "must look like <unique-part@domain>")
        if self.date is not None and (
            not isinstance(self.date, dt.datetime) or self.date.tzinfo is None
        ):
            raise MessageError("date", "must be a timezone-aware datetime")

    def rendered_subject(self) -> str:
        """The subject with placeholders filled in."""
        subject = render_placeholders("subject", self.subject, self.placeholders)
        _check_header_text("subject", subject)
        return subject

    def rendered_body(self) -> str:
        """The plain-text body with placeholders filled in."""
        return render_placeholders("body", self.body, self.placeholders)

    def rendered_html(self) -> str | None:
        """The HTML body with placeholders filled in (values HTML-escaped), or None."""
        if self.html is None:
            return None
        return render_placeholders("html", self.html, self.placeholders, escape=html_lib.escape)

    @property
    def recipients(self) -> tuple[Mailbox, ...]:
        """To, Cc and Bcc together, each address once."""
        seen: set[str] = set()
        result = []
        for mailbox in (*self.to, *self.cc, *self.bcc):
            if mailbox.address.casefold() not in seen:
                seen.add(mailbox.address.casefold())
                result.append(mailbox)
        return tuple(result)


@attrs.frozen
class PreparedMessage:
    """A composed message, ready to send: exactly the bytes that will be transmitted."""

    data: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")
    envelope_sender: str
    recipients: tuple[str, ...]
    message_id: str
    bcc: tuple[str, ...] = ()
    smtputf8: bool = False


def _header_address(mailbox: Mailbox, utf8: bool) -> Address:
    spec = mailbox.address if utf8 else mailbox.envelope_address
    local, _, domain = spec.rpartition("@")
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = email.utils.unquote(local)
    return Address(display_name=mailbox.display_name, username=local, domain=domain)


def new_message_id(domain: str) -> str:
    """A globally unique Message-ID at `domain` (RFC 5322 section 3.6.4)."""
    stamp = format(time.time_ns() // 1000, "x")
    return f"<{stamp}.{secrets.token_hex(10)}@{domain}>"


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
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    message_id = email_.message_id or new_message_id(
        (author.ascii_address or author.address).rpartition("@")[2]
    )
    date = email_.date or (now() if now else dt.datetime.now(dt.UTC).astimezone())

    # MIMEPart rather than EmailMessage: its sub-parts get no stray MIME-Version headers.
    msg = MIMEPart(policy=policy)
    msg["From"] = _header_address(author, utf8)
    if reply_to is not None:
        msg["Reply-To"] = _header_address(reply_to, utf8)
    if email_.to:
        msg["To"] = [_header_address(m, utf8) for m in email_.to]
    if email_.cc:
        msg["Cc"] = [_header_address(m, utf8) for m in email_.cc]
    msg["Subject"] = email_.rendered_subject()
    msg["Date"] = email.utils.format_datetime(date)
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"
    for name, value in email_.headers:
        msg[name] = value

    body = email_.rendered_body().replace("\r\n", "\n").replace("\r", "\n")
    msg.set_content(body, subtype="plain", charset="utf-8")
    html = email_.rendered_html()
    if html is not None:
        msg.add_alternative(html.replace("\r\n", "\n").replace("\r", "\n"), subtype="html")
    for attachment in email_.attachments:
        maintype, _, subtype = attachment.resolved_content_type.partition("/")
        msg.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
        )

    data = msg.as_bytes(policy=policy)
    check_transmittable(data)
    envelope = sender.envelope_address
    return PreparedMessage(
        data=data,
        envelope_sender=envelope,
        recipients=tuple(m.envelope_address for m in email_.recipients),
        message_id=message_id,
        bcc=tuple(m.envelope_address for m in email_.bcc),
        smtputf8=utf8,
    )


def check_transmittable(data: bytes) -> None:
    """Refuse message bytes that SMTP cannot carry unchanged: NUL or lines over 998 octets."""
    if b"\x00" in data:
        raise MessageFormatError("message", "contains a NUL byte")
    start = 0
    length = len(data)
    while start < length:
        end = data.find(b"\n", start)
        if end == -1:
            end = length
        line_length = end - start - (1 if end > start and data[end - 1 : end] == b"\r" else 0)
        if line_length > MAX_LINE_OCTETS:
            raise MessageFormatError(
                "message",
                f"a line is {line_length} octets long; SMTP allows {MAX_LINE_OCTETS} "
                "(encode the content, e.g. quoted-printable or base64)",
            )
        start = end + 1
