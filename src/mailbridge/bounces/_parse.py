"""`parse_bounce`: standards first (RFC 3464/6533, RFC 6522, RFC 5965, RFC 3834), then the
known servers' own formats, then generic patterns (reported as kind="heuristic")."""

from __future__ import annotations

import re

from ._dsn import address_of, dsn_recipients, feedback_fields, message_fields, xtext_decode
from ._formats import ADDRESS, FORMATS, MAX_TEXT, recipients_in
from ._mime import RETURNED_TYPES, Entity, decode_words, normalize, parse_entity, returned_fields
from ._model import BounceRecipient, BounceReport, Reason
from ._reasons import classify, find_reply_code, find_status, is_permanent
from ._ses import parse_ses

__all__ = ["looks_like_report", "parse_bounce"]

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery (?:system|subsystem)|mdaemon", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|has failed|problem)"
    r"|returned mail|failure notice|non-?delivery|mail delivery failed|delivery notification",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|auto:|out of (?:the )?office"
    r"|abwesen|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|vacation)",
    re.I,
)
_GENERIC_END = re.compile(  # possessive and bounded: linear on a line of dashes
    r"^-{2,}+[^\n]{0,200}?(?:original message|copy of the message|message header|below this line"
    r"|returned message|original headers)|^(?:Return-Path|Received|DKIM-Signature):"
    r"|^>[> \t]{0,20}(?:From|To|Cc|Subject|Date|Message-ID):",  # the original, quoted with ">"
    re.I | re.M,
)
_DELAY = re.compile(r"\bdelay|will (?:be )?retr|temporar|not yet been delivered|still trying", re.I)
_ADDRESS = re.compile(rf"<?({ADDRESS})>?")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
_TAG = re.compile(r"<[^<>]{0,2000}>")
_HIDDEN = re.compile(r"<(script|style)\b", re.I)
MAX_FAILED_TEXT = 100 * 330  # X-Failed-Recipients read: 100 addresses of the longest kind
MAX_HTML = 256 * 1024


def parse_bounce(raw: bytes) -> BounceReport | None:
    """Read a bounce, complaint or auto-reply; None for any other message.

    Bounded: at most the first 4 MiB are read, MIME nesting and part counts
    are limited, and nothing is ever taken from the returned original message
    except its Message-ID. A message in no known format but looking like a
    bounce comes back with kind="heuristic".
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(raw).__name__}")
    root = parse_entity(normalize(bytes(raw)))
    parts = root.walk()
    subject = decode_words(root.get("subject", "") or "")
    listed = ",".join(root.get_all("x-failed-recipients"))[:MAX_FAILED_TEXT]
    failed = tuple(_ADDRESS.findall(listed))[:100]
    original = _original_message_id(root, parts)
    status_part = next((p for p in parts if p.content_type in _STATUS_TYPES), None)
    if status_part is not None:
        recipients = dsn_recipients(status_part)
        if recipients:
            fields = message_fields(status_part)
            envid = fields.get("original-envelope-id")
            return BounceReport(
                kind="dsn",
                recipients=tuple(recipients),
                source="rfc3464",
                original_message_id=original,
                original_envelope_id=xtext_decode(envid.strip()) if envid else None,
                original_recipient=recipients[0].original_recipient,
                reporting_mta=_after_type(fields.get("reporting-mta")),
                subject=subject,
                failed_recipients=failed,
            )
    feedback = next((p for p in parts if p.content_type == "message/feedback-report"), None)
    if feedback is not None:
        return _arf(feedback, original, subject)
    text = _notification_text(root, parts)
    ses = parse_ses(text) if "{" in text[:4096] else None
    if ses is not None:
        return ses
    heading = f"From: {root.get('from', '')}\nSubject: {subject}\n"
    for fmt in FORMATS:
        if not fmt.signature.search(heading + text[:4096]):
            continue
        found = recipients_in(fmt, text, heading)
        if found is None and failed:
            found = ([_from_failed_header(address, text) for address in failed], text)
        if found is not None and found[0]:
            return BounceReport(
                kind="dsn",
                recipients=tuple(found[0]),
                source=fmt.name,
                original_message_id=original or _inline_message_id(text, fmt.end),
                subject=subject,
                failed_recipients=failed,
            )
    if _is_auto_reply(root, subject):
        return _auto_reply(root, subject)
    if failed or _looks_like_bounce(root, subject):
        return _heuristic(root, text, subject, failed, original)
    return None


def _after_type(value: str | None) -> str | None:
    return value.rpartition(";")[2].strip() or None if value else None


def _notification_text(root: Entity, parts: list[Entity]) -> str:
    """The human-readable notification: the first text part outside any returned message."""
    for part in parts:
        if part.content_type == "text/plain" and not part.children:
            return part.text()
    for part in parts:
        if part.content_type == "text/html" and not part.children:
            return _strip_html(part.text())
    return root.text() if not root.children else ""


def _strip_html(html: str) -> str:
    html = _without_scripts(html[:MAX_HTML])
    html = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d)>", "\n", html)
    text = _TAG.sub("", html)
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&nbsp;", " ")):
        text = text.replace(entity, char)
    return text.replace("&amp;", "&")


def _without_scripts(html: str) -> str:
    """`html` without <script> and <style> elements; linear (an unclosed one ends the text)."""
    kept: list[str] = []
    lowered = html.lower()
    position = 0
    while (found := _HIDDEN.search(html, position)) is not None:
        kept.append(html[position : found.start()])
        close = lowered.find(f"</{found.group(1).lower()}", found.end())
        if close == -1:
            return " ".join(kept)
        end = lowered.find(">", close)
        position = len(html) if end == -1 else end + 1
        kept.append(" ")
    kept.append(html[position:])
    return "".join(kept)


def _original_message_id(root: Entity, parts: list[Entity]) -> str | None:
    for part in parts:
        if part.content_type in RETURNED_TYPES:
            for name, value in returned_fields(part):
                if name == "message-id":
                    found = _MESSAGE_ID.search(value)
                    if found:
                        return found.group(0)
    return None


def _inline_message_id(text: str, end: re.Pattern[str]) -> str | None:
    """The Message-ID of an original returned inline, after the format's `end` marker."""
    marker = end.search(text[:MAX_TEXT])
    if marker is None:
        return None
    match = re.search(
        r"^Message-ID:\s*(<[^<>\s]{1,250}>)", text[marker.end() :][:65536], re.I | re.M
    )
    return match.group(1) if match else None


def _arf(feedback: Entity, original: str | None, subject: str) -> BounceReport:
    fields = feedback_fields(feedback)
    values: dict[str, str] = {}
    for name, value in fields:
        values.setdefault(name, value)
    recipients = tuple(
        BounceRecipient(
            address=address,
            action="delivered",
            status=None,
            reason=Reason.OTHER,
            permanent=False,
        )
        for name, value in fields
        if name == "original-rcpt-to" and (address := address_of(value)) is not None
    )[:100]
    return BounceReport(
        kind="arf",
        recipients=recipients,
        source="rfc5965",
        original_message_id=original,
        original_recipient=recipients[0].address if recipients else None,
        reporting_mta=_after_type(values.get("reporting-mta")),
        feedback_type=values.get("feedback-type", "other").strip().lower() or "other",
        subject=subject,
    )


def _is_auto_reply(root: Entity, subject: str) -> bool:
    """RFC 3834 (Auto-Submitted: auto-replied), and the headers and subjects of vacation tools."""
    if _DAEMON.search(root.get("from", "") or ""):
        return False
    if _BOUNCE_SUBJECT.search(subject) and not _AUTO_SUBJECT.search(subject):
        return False  # "Undeliverable: ..." from a server with another name: a bounce
    submitted = (root.get("auto-submitted") or "no").strip().lower()
    return (
        submitted.startswith("auto-replied")
        or root.get("x-autoreply") is not None
        or root.get("x-autorespond") is not None
        or (root.get("precedence") or "").strip().lower() == "auto_reply"
        or (bool(_AUTO_SUBJECT.search(subject)) and submitted != "no")
        or (
            bool(_AUTO_SUBJECT.search(subject)) and root.get("x-auto-response-suppress") is not None
        )
    )


def _auto_reply(root: Entity, subject: str) -> BounceReport:
    sender = _ADDRESS.search(root.get("from", "") or "")
    replied_to = _MESSAGE_ID.search(root.get("in-reply-to", "") or "") or _MESSAGE_ID.search(
        root.get("references", "") or ""
    )
    recipients = (
        (
            BounceRecipient(
                address=sender.group(1),
                action="delivered",
                status=None,
                reason=Reason.OTHER,
                permanent=False,
                diagnostic=subject[:2000],
            ),
        )
        if sender
        else ()
    )
    return BounceReport(
        kind="auto_reply",
        recipients=recipients,
        source="rfc3834",
        original_message_id=replied_to.group(0) if replied_to else None,
        subject=subject,
    )


def _looks_like_bounce(root: Entity, subject: str) -> bool:
    """From a mailer daemon, or a bounce's subject with the null sender (RFC 5321 4.5.5)."""
    return bool(_DAEMON.search(root.get("from", "") or "")) or (
        bool(_BOUNCE_SUBJECT.search(subject)) and (root.get("return-path") or "").strip() == "<>"
    )


def _from_failed_header(address: str, text: str) -> BounceRecipient:
    status = find_status(text)
    reply_code = find_reply_code(text)
    action = "delayed" if _DELAY.search(text) and not (status or "").startswith("5") else "failed"
    status = status or ("4.0.0" if action == "delayed" else "5.0.0")
    return BounceRecipient(
        address=address,
        action=action,
        status=status,
        reason=classify(status, text, reply_code),
        permanent=is_permanent(action, status, reply_code),
        reply_code=reply_code,
        diagnostic=" ".join(text.split())[:500],
    )


def _heuristic(
    root: Entity, text: str, subject: str, failed: tuple[str, ...], original: str | None
) -> BounceReport:
    """Generic patterns: the addresses near a status code, before the returned original."""
    end = _GENERIC_END.search(text[:65536])
    section = text[: end.start()] if end else text[:65536]
    ours = {
        a.lower()
        for name in ("to", "from", "reply-to", "sender")
        for a in _ADDRESS.findall(root.get(name, "") or "")
    }
    addresses = list(dict.fromkeys(failed))
    if not addresses:
        for match in _ADDRESS.finditer(section):
            address = match.group(1)
            if address.lower() not in ours and not _DAEMON.search(address):
                addresses.append(address)
        addresses = list(dict.fromkeys(addresses))[:20]
    recipients = []
    for address in addresses:
        at = section.lower().find(address.lower())
        window = section[at : at + 600] if at != -1 else section
        recipient = _from_failed_header(address, window if find_status(window) else section)
        recipients.append(recipient)
    return BounceReport(
        kind="heuristic",
        recipients=tuple(recipients),
        source="generic",
        original_message_id=original or _inline_message_id(text, _GENERIC_END),
        subject=subject,
        failed_recipients=failed,
    )


def looks_like_report(fields: list[tuple[str, str]]) -> bool:
    """From a message's header fields alone: could it be a bounce, complaint or auto-reply?"""
    values: dict[str, str] = {}
    for name, value in fields:
        values.setdefault(name, value)
    subject = decode_words(values.get("subject", ""))
    content_type = values.get("content-type", "").lower()
    return (
        "multipart/report" in content_type
        or "x-failed-recipients" in values
        or (values.get("auto-submitted") or "no").strip().lower() != "no"
        or any(name in values for name in ("x-autoreply", "x-autorespond"))
        or values.get("return-path", "").strip() == "<>"
        or bool(_DAEMON.search(values.get("from", "")))
        or bool(_BOUNCE_SUBJECT.search(subject) or _AUTO_SUBJECT.search(subject))
        or "notification" in subject.lower()
    )
