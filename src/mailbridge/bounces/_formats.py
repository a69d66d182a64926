"""Plain-text bounces of servers that send no RFC 3464 report, recognised by their wording.

Each `TextFormat` names a server's format: a `signature` found in From,
Subject or the start of the body; where the list of recipients `start`s;
where the returned original `end`s it (nothing after that is read, so an
address quoted from the original is never taken); the line that introduces
each `recipient`; and where the remote server's own words are (`diagnostic`).
Adding a format is adding a row.
"""

from __future__ import annotations

import re

import attrs

from ._model import BounceRecipient, Reason
from ._reasons import classify, find_reply_code, find_status, is_permanent

__all__ = ["FORMATS", "TextFormat", "recipients_in"]

_F = re.IGNORECASE | re.MULTILINE
ADDRESS = r"[^\s<>@\"'()\[\],;:]{1,64}@[A-Za-z0-9._-]{1,255}\.[A-Za-z0-9-]{2,63}"
MAX_TEXT = 64 * 1024
MAX_RECIPIENTS = 100


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, _F)


@attrs.frozen
class TextFormat:
    """One server's plain-text bounce format (see the module)."""

    name: str
    signature: re.Pattern[str]
    recipient: re.Pattern[str]  # group "address"
    end: re.Pattern[str]
    start: re.Pattern[str] | None = None
    diagnostic: re.Pattern[str] | None = None  # group "text": the remote server's words
    delayed: re.Pattern[str] | None = None  # matched in subject or text: a delay warning
    remote_mta: re.Pattern[str] | None = None  # group "host"


FORMATS: tuple[TextFormat, ...] = (
    TextFormat(
        "exim",
        signature=_re(r"This message was created automatically by mail delivery software"),
        start=_re(
            r"following address\(es\) failed:|address(?:\(es\))? to which the message has not"
            r" yet been delivered"
        ),
        recipient=_re(rf"^ {{2}}<?(?P<address>{ADDRESS})>?\s*$"),
        end=_re(r"^-{2,} ?(?:This is a copy of the message|The header of the original message)"),
        diagnostic=_re(
            r"(?:SMTP error from remote mail server after (?:[A-Z ]+:<[^>\n]*>)?[^:\n]*:\s*"
            r"(?:host [^:\n]*:\s*)?"
            r"|Delay reason:\s*+(?!SMTP error)|LMTP error after [^:\n]*:\s*)"
            r"(?P<text>[^\n]*(?:\n {4,}[^\n]+)*)"
        ),
        delayed=_re(r"^Subject: Warning: message \S+ delayed|has not yet been delivered"),
        remote_mta=_re(r"\bhost (?P<host>[A-Za-z0-9._-]+) \["),
    ),
    TextFormat(
        "qmail",
        signature=_re(r"This is the qmail-send program at|I'm afraid I wasn't able to deliver"),
        recipient=_re(rf"^<(?P<address>{ADDRESS})>:\s*$"),
        end=_re(r"^--- (?:Below this line is a copy of the message|Enclosed are the original)"),
        diagnostic=_re(r"Remote host said:\s*(?P<text>[^\n]*)"),
        remote_mta=_re(r"^(?P<host>[0-9.]{7,15}|[A-Za-z0-9._-]+) does not like recipient"),
    ),
    TextFormat(
        "yahoo",
        signature=_re(
            r"Sorry, we were unable to deliver your message to the following address"
            r"|^Message from yahoo\.com\."
        ),
        recipient=_re(rf"^<(?P<address>{ADDRESS})>:\s*$"),
        end=_re(r"^--- Below this line is a copy of the message"),
        diagnostic=_re(r"Remote host said:\s*(?P<text>[^\n]*)"),
        delayed=_re(
            r"Unable to deliver message to the following address\(es\)\.\s*\n.*(?:delay|retry)"
        ),
    ),
    TextFormat(
        "gmail",
        signature=_re(
            r"Delivery to the following recipients? (?:failed permanently|has been delayed)"
            r"|Your message wasn't delivered to"
            r"|Technical details of (?:permanent|temporary) failure"
            r"|^From:.*mailer-daemon@google(?:mail)?\.com"
        ),
        recipient=_re(
            rf"(?:Delivery to the following recipients? (?:failed permanently|has been delayed):"
            rf"\s*\n\s*|Your message wasn't delivered to |There was a temporary problem delivering"
            rf" your message to )<?(?P<address>{ADDRESS})>?"
        ),
        end=_re(r"^-{3,} ?(?:Original message|Message header follows)"),
        diagnostic=_re(
            r"(?:The error that the other server returned was:|The response (?:from the remote"
            r" server )?was:)\s*(?P<text>[^\n]*(?:\n[^\n]+)*)"
        ),
        delayed=_re(r"has been delayed|temporary (?:failure|problem)|Delivery incomplete"),
    ),
    TextFormat(
        "exchange",
        signature=_re(
            r"Delivery has failed to these recipients or groups|Your message did not reach some or"
            r" all of the intended recipients|Diagnostic information for administrators"
            r"|Your message to \S+ couldn't be delivered"
        ),
        start=_re(
            r"^Diagnostic information for administrators:|^The following recipient\(s\) cannot be"
            r" reached:"
        ),
        recipient=_re(rf"^[ \t]*+<?(?P<address>{ADDRESS})>?(?: on [^\n]*)?[ \t]*$"),
        end=_re(r"^Original message headers:|^-{3,} ?Original message|^_{8,}"),
        diagnostic=_re(
            r"(?:Remote Server returned '|#(?=\d{3} )|<[^<>\n]*#)(?P<text>[^'>\n]*(?:#{2})?)"
        ),
        remote_mta=_re(r"^Generating server:\s*(?P<host>[A-Za-z0-9._-]+)"),
    ),
    TextFormat(
        "sendmail",
        signature=_re(
            r"^[ \t]*+-{3,} The following addresses had (?:permanent fatal|transient non-fatal)"
        ),
        start=_re(r"^[ \t]*+-{3,} The following addresses had"),
        recipient=_re(rf"^<?(?P<address>{ADDRESS})>?\s*$"),
        end=_re(
            r"^[ \t]*+-{3,} ?(?:Original message follows|Message header follows|Returned mail)"
        ),
        diagnostic=_re(r"\(reason: (?P<text>[^)\n]*)\)"),
        delayed=_re(r"transient non-fatal errors"),
    ),
    TextFormat(
        "postfix",
        signature=_re(r"This is the mail system at host|I'm sorry to have to inform you that your"),
        recipient=_re(rf"^<(?P<address>{ADDRESS})>(?: \(expanded from <[^>\n]*>\))?:"),
        end=_re(r"^-{3,}|^Content-Description: (?:Undelivered Message|Delivery report)"),
        diagnostic=_re(r"said:\s*(?P<text>[^\n]*(?:\n {4,}[^\n]+)*)"),
        delayed=_re(r"^Subject:.*Delayed Mail|This is a warning only"),
        remote_mta=_re(r"host (?P<host>[A-Za-z0-9._-]+)\[[^\]]*\] said"),
    ),
)


def recipients_in(
    fmt: TextFormat, text: str, heading: str
) -> tuple[list[BounceRecipient], str] | None:
    """The recipients `fmt` finds in `text` (cut at the returned original); None: no match."""
    text = text[:MAX_TEXT]
    end = fmt.end.search(text)
    section = notice = text[: end.start()] if end else text
    start = fmt.start.search(section) if fmt.start else None
    if start:
        section = section[start.end() :]
    matches = list(fmt.recipient.finditer(section))[:MAX_RECIPIENTS]
    if not matches:
        return None
    delayed = fmt.delayed is not None and bool(
        fmt.delayed.search(heading) or fmt.delayed.search(notice)
    )
    found: dict[str, BounceRecipient] = {}
    for index, match in enumerate(matches):
        stop = matches[index + 1].start() if index + 1 < len(matches) else len(section)
        block = section[match.end() : stop]
        address = match.group("address")
        if address.lower() in found and not block.strip():
            continue  # an address listed again without details keeps the first one's
        found[address.lower()] = _recipient(fmt, address, block, delayed)
    return list(found.values()), section


def _recipient(fmt: TextFormat, address: str, block: str, delayed: bool) -> BounceRecipient:
    described = fmt.diagnostic.search(block) if fmt.diagnostic else None
    diagnostic = described.group("text") if described else block
    diagnostic = " ".join(diagnostic.split())[:2000]
    status = find_status(diagnostic) or find_status(block)
    reply_code = find_reply_code(diagnostic)
    if status is None and reply_code is not None:
        status = f"{reply_code // 100}.0.0"
    action = "delayed" if delayed and not (status or "").startswith("5") else "failed"
    if status is None:
        status = "4.0.0" if action == "delayed" else "5.0.0"
    host = fmt.remote_mta.search(block) if fmt.remote_mta else None
    reason = classify(status, diagnostic or block, reply_code)
    if reason == Reason.OTHER:
        reason = classify(status, " ".join(block.split()), reply_code)
    return BounceRecipient(
        address=address,
        action=action,
        status=status,
        reason=reason,
        permanent=is_permanent(action, status, reply_code),
        reply_code=reply_code,
        diagnostic=diagnostic,
        remote_mta=host.group("host") if host else None,
    )
