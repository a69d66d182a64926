"""Composing document emails: recipients, placeholders, attachments and safe headers."""

from __future__ import annotations

import datetime as dt
import html as html_lib
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._addresses import Mailbox, parse_mailbox, parse_mailbox_list
from ._attachments import Attachment
from ._headersafety import check_header_name, check_header_text
from .errors import MessageError, MissingPlaceholder

__all__ = ["DocumentEmail", "render_placeholders"]

MAX_FORMAT_WIDTH = 1000  # "{amount:>300000000}" must not exhaust memory
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")  # RFC 5322 3.6.4 msg-id
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
        "Return-Path",
        "Received",
    )
)


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
        if spec and any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec)):
            raise MessageError(field, f"placeholder {{{name}:{spec}}}: width too large")
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
        check_header_name("headers", name)
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith("content-"):
            raise MessageError(
                "headers", f"{name} is set by mailbridge; use the DocumentEmail field instead"
            )
        if not isinstance(header_value, str):
            raise MessageError(f"headers[{name}]", "header values must be strings")
        check_header_text(f"headers[{name}]", header_value)
        items.append((name, header_value))
    return tuple(items)


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
        check_header_text("subject", self.subject)
        self.rendered_subject()
        self.rendered_body()
        self.rendered_html()
        if self.message_id is not None:
            check_header_text("message_id", self.message_id)
            if not _MESSAGE_ID.fullmatch(self.message_id):
                raise MessageError("message_id", "must look like <unique-part@domain>")
        if self.date is not None and (
            not isinstance(self.date, dt.datetime) or self.date.tzinfo is None
        ):
            raise MessageError("date", "must be a timezone-aware datetime")

    def rendered_subject(self) -> str:
        """The subject with placeholders filled in."""
        subject = render_placeholders("subject", self.subject, self.placeholders)
        check_header_text("subject", subject)
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
            if mailbox.address not in seen:
                seen.add(mailbox.address)
                result.append(mailbox)
        return tuple(result)
