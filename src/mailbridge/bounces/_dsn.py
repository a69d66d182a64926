"""RFC 3464 / RFC 6533 delivery-status fields and RFC 5965 feedback reports, to recipients."""

from __future__ import annotations

import re

from ._mime import Entity, decode_words, normalize, parse_fields
from ._model import ACTIONS, BounceRecipient, Reason
from ._reasons import classify, find_reply_code, find_status, is_permanent

__all__ = ["address_of", "dsn_recipients", "feedback_fields", "message_fields", "xtext_decode"]

_BLANK = re.compile(rb"\n[ \t]*\n")
_ACTION_WORDS = {"failure": "failed", "delay": "delayed", "deliverable": "delivered"}
_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_UNITEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\\r\n]|\\.){1,128}"@[^\s<>"]{1,255}')
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_RECIPIENTS = 500
MAX_STATUS = 1024 * 1024  # of a delivery-status body: 500 recipients need far less
_PER_MESSAGE = frozenset(
    {"original-envelope-id", "reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date"}
)


def xtext_decode(value: str) -> str | None:
    """RFC 3461 xtext: "+HH" stands for the octet HH (octets read as UTF-8, as we encode
    them); None when the result holds control characters (nothing a header could carry)."""
    octets, position = bytearray(), 0
    for match in _XTEXT.finditer(value):
        octets += value[position : match.start()].encode("utf-8")
        octets.append(int(match.group(1), 16))
        position = match.end()
    text = (octets + value[position:].encode("utf-8")).decode("utf-8", "replace")
    return None if _CONTROL.search(text) else text


def address_of(value: str | None) -> str | None:
    """The address of "rfc822; <user@example.com>" (RFC 6533 "utf-8; ..." escapes undone)."""
    if not value:
        return None
    kind, semicolon, address = value.partition(";")
    address = _UNITEXT.sub(lambda m: _char(m.group(1)), (address if semicolon else kind).strip())
    if address.startswith("<"):
        address = address[1:].partition(">")[0]
    quoted = _QUOTED_LOCAL.match(address)
    if quoted:
        address = quoted.group(0)
    else:
        address = address.split()[0] if address.split() else ""
        address = address.strip("<>\"'")
    return address if "@" in address and len(address) <= 320 else None


def _char(code: str) -> str:
    number = int(code, 16)
    return chr(number) if 0 < number <= 0x10FFFF and not 0xD800 <= number <= 0xDFFF else ""


def _groups(entity: Entity) -> list[list[tuple[str, str]]]:
    """The field groups of a status body; a group per recipient even without blank lines."""
    text = normalize(entity.decoded())[:MAX_STATUS]
    groups: list[list[tuple[str, str]]] = []
    for block in _BLANK.split(text):
        if len(groups) > MAX_RECIPIENTS:
            break
        if not block.strip():
            continue
        fields = parse_fields(block, utf8=True)
        current: list[tuple[str, str]] = []
        for name, value in fields:
            starts = name == "final-recipient" and any(n == "final-recipient" for n, _ in current)
            if starts:
                keep = current[-1:] if current[-1][0] == "original-recipient" else []
                groups.append(current[: len(current) - len(keep)])
                current = keep
            current.append((name, value))
        if current:
            groups.append(current)
    return groups[: MAX_RECIPIENTS + 1]


def message_fields(entity: Entity) -> dict[str, str]:
    """The per-message fields (Reporting-MTA, Original-Envelope-Id, ...), first value wins."""
    found: dict[str, str] = {}
    for group in _groups(entity):
        for name, value in group:
            if name in _PER_MESSAGE:
                found.setdefault(name, value)
    return found


def dsn_recipients(entity: Entity) -> list[BounceRecipient]:
    """One `BounceRecipient` per recipient group of a delivery-status entity."""
    recipients = []
    for group in _groups(entity):
        fields: dict[str, str] = {}
        for name, value in group:
            fields.setdefault(name, value)
        address = address_of(fields.get("final-recipient")) or address_of(
            fields.get("original-recipient")
        )
        if address is None:
            continue
        recipients.append(recipient_from(fields, address))
    return recipients


def recipient_from(fields: dict[str, str], address: str) -> BounceRecipient:
    """A recipient from its RFC 3464 fields."""
    diagnostic_field = decode_words(fields.get("diagnostic-code", ""))
    kind, _, diagnostic = diagnostic_field.partition(";")
    if not _:
        kind, diagnostic = "", diagnostic_field
    diagnostic = " ".join(diagnostic.split())
    status = find_status(fields.get("status", "")) or find_status(diagnostic)
    reply_code = find_reply_code(diagnostic) if kind.strip().lower() in ("smtp", "") else None
    action_word = fields.get("action", "").strip().lower().split(" ")[0]
    action = _ACTION_WORDS.get(action_word, action_word)
    if action not in ACTIONS:
        action = {"5": "failed", "4": "delayed", "2": "delivered"}.get((status or "0")[0], "failed")
    reason = classify(status, diagnostic, reply_code)
    if reason == Reason.OTHER and action == "failed" and (status or "").startswith("4"):
        reason = Reason.EXPIRED  # a temporary failure retried until the queue gave up
    remote = fields.get("remote-mta")
    return BounceRecipient(
        address=address,
        action=action,
        status=status,
        reason=reason,
        permanent=is_permanent(action, status, reply_code),
        reply_code=reply_code,
        diagnostic=diagnostic[:2000],
        remote_mta=remote.rpartition(";")[2].strip() or None if remote else None,
        original_recipient=address_of(fields.get("original-recipient")),
    )


def feedback_fields(entity: Entity) -> list[tuple[str, str]]:
    """The fields of a message/feedback-report entity (RFC 5965)."""
    return parse_fields(normalize(entity.decoded()), utf8=True)
