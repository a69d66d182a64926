"""Email addresses: parsing the send dialog's lists and validating every address."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from typing import Any

import attrs

from ._headersafety import has_line_break
from .errors import HeaderInjection, InvalidAddress

__all__ = ["Mailbox", "parse_mailbox", "parse_mailbox_list"]

# "Display Name <addr@domain>": the name may hold anything a person types.
_ANGLE_ADDR = re.compile(r"^(.*?)<([^<>]*)>$", re.DOTALL)


def _check_no_encoded_word(field: str, address: str) -> None:
    """Refuse an RFC 2047 encoded word ("=?charset?q?text?=") in the local part.

    RFC 2047 section 5 forbids them in an addr-spec, and the email package would
    decode one (line breaks included); anything a lenient decoder might take for
    one ("=?" followed by "?=") is refused.
    """
    local = address.rpartition("@")[0]
    start = local.find("=?")
    if start != -1 and local.find("?=", start + 2) != -1:
        raise InvalidAddress(
            field,
            address,
            "an address may not contain an RFC 2047 encoded word (=?...?=), RFC 2047 section 5",
        )


def _no_encoded_word(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, str):
        _check_no_encoded_word(attribute.name, value)


@attrs.frozen
class Mailbox:
    """A validated address with an optional display name.

    `address` is the normalized address (Unicode where it is internationalized);
    `ascii_address` is the same address with its domain in IDNA form, or None
    when the local part itself is not ASCII (such an address needs SMTPUTF8).
    """

    address: str = attrs.field(validator=_no_encoded_word)
    ascii_address: str | None = attrs.field(validator=_no_encoded_word)
    display_name: str = ""

    @property
    def needs_smtputf8(self) -> bool:
        """True when the address can only travel over an SMTPUTF8 session."""
        return self.ascii_address is None

    @property
    def domain(self) -> str:
        """The domain part (Unicode form)."""
        return self.address.rpartition("@")[2]

    @property
    def envelope_address(self) -> str:
        """The form to use in MAIL FROM / RCPT TO."""
        return self.ascii_address or self.address

    def __str__(self) -> str:
        if self.display_name:
            return f"{self.display_name} <{self.address}>"
        return self.address


def _split(value: str) -> list[str]:
    """Split on commas and semicolons outside quotes, angle brackets and comments."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif comment:
            comment += (char == "(") - (char == ")")
        elif not quoted:
            if char == "<":
                angle += 1
            elif char == ">" and angle:
                angle -= 1
            elif char == "(":
                comment += 1
            elif char in ",;" and not angle:
                parts.append("".join(current))
                current = []
                continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _strip_comments(text: str) -> tuple[str, str]:
    """Remove (comments) outside quotes; returns the rest and the comments' text."""
    kept: list[str] = []
    comments: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not depth:
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            if depth == 1:
                continue
        elif not quoted and char == ")" and depth:
            depth -= 1
            if not depth:
                continue
        (comments if depth else kept).append(char)
    return "".join(kept).strip(), "".join(comments).strip()


def parse_mailbox(field: str, value: str | Mailbox) -> Mailbox:
    """Validate one address ("a@x.example" or "Name <a@x.example>"); no DNS lookups."""
    if isinstance(value, Mailbox):
        return value
    if not isinstance(value, str):
        raise InvalidAddress(field, repr(value), "an address must be a string")
    if has_line_break(value):
        raise HeaderInjection(field)
    text = value.strip()
    if not text:
        raise InvalidAddress(field, value, "the address is empty")
    text, comment = _strip_comments(text)
    display_name = ""
    angle = _ANGLE_ADDR.match(text)
    if angle:
        display_name = angle.group(1).strip()
        if len(display_name) >= 2 and display_name[0] == display_name[-1] == '"':
            display_name = email.utils.unquote(display_name)
        elif "<" in display_name or ">" in display_name:
            raise InvalidAddress(
                field, value.strip(), "two addresses in one entry; separate them with commas"
            )
        text = angle.group(2).strip()
    _check_no_encoded_word(field, text)
    import email_validator  # on first use: compiling its patterns takes ~25 ms at import

    try:
        valid = email_validator.validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=True,
            # Quoted local parts ("a b"@x) are refused: they are vanishingly rare in
            # business mail and many servers and clients mishandle them.
            allow_quoted_local=False,
            # RFC 2606 ".test" stays usable so that applications can test with it;
            # the other special-use names (.invalid, .local, .localhost) are refused.
            test_environment=True,
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddress(field, text, str(exc)) from None
    return Mailbox(
        address=valid.normalized,
        ascii_address=valid.ascii_email,
        display_name=display_name or comment,  # "jane@x.example (Jane Doe)", the old style
    )


def parse_mailbox_list(
    field: str, value: str | Mailbox | Iterable[str | Mailbox]
) -> tuple[Mailbox, ...]:
    """Validate a list of addresses, or one string of comma- or semicolon-separated ones."""
    if isinstance(value, (str, Mailbox)):
        items: list[str | Mailbox] = [value] if isinstance(value, Mailbox) else list(_split(value))
        if isinstance(value, str) and has_line_break(value):
            raise HeaderInjection(field)
    else:
        items = []
        for item in value:
            items.extend(_split(item) if isinstance(item, str) else [item])
    result: list[Mailbox] = []
    seen: set[str] = set()
    for item in items:
        mailbox = parse_mailbox(field, item)
        key = mailbox.address  # local parts are case-sensitive (RFC 5321 2.4)
        if key not in seen:
            seen.add(key)
            result.append(mailbox)
    return tuple(result)
