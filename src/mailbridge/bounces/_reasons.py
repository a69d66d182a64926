"""From a status code and a server's text to a `Reason`, and whether it is permanent.

Servers misuse enhanced status codes (Microsoft's 5.1.10 means "recipient not
found", Gmail answers a full mailbox with 5.2.2 or 4.2.2, many say 5.7.1 for
everything), so the remote server's text is read first, with patterns in a
fixed order, and the RFC 3463 code decides only when the text says nothing
known. The table in docs/bounces.md lists both.
"""

from __future__ import annotations

import re

from ._model import Reason

__all__ = ["STATUS", "classify", "find_reply_code", "find_status", "is_permanent"]

# Checked in this order: the first pattern found in the diagnostic text wins.
TEXT_PATTERNS: tuple[tuple[Reason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        (
            Reason.RATE_LIMITED,
            r"rate.?limit|too many (?:messages|mails|emails|connections|recipients)|throttl"
            r"|sending (?:limit|quota)|unusual rate|try again later.{0,20}limit"
            r"|unexpected volume|temporarily deferred due to",
        ),
        (
            Reason.MAILBOX_FULL,
            r"mailbox (?:is )?full|quota|over ?quota|insufficient (?:system )?storage"
            r"|mailbox (?:size )?(?:limit )?exceeded|storage (?:space|allocation)|mail ?box full"
            r"|out of storage|(?:disk|user) (?:is )?full",
        ),
        (
            Reason.MESSAGE_TOO_BIG,
            r"message (?:size )?(?:exceeds|is too (?:big|large))|too (?:big|large)"
            r"|size limit|exceeds? (?:the )?(?:maximum|fixed) (?:message )?size|message length",
        ),
        (
            Reason.HOST_UNKNOWN,
            r"host (?:or domain name )?not found|domain (?:name )?not found|no such domain"
            r"|domain (?:does not|doesn't) exist|unrouteable (?:mail )?domain|nxdomain"
            r"|name or service not known|null mx|no mx (?:record|host)|host unknown"
            r"|domain .{0,40}(?:does not|doesn't) accept mail",
        ),
        (
            Reason.HAS_MOVED,
            r"has moved|is no longer (?:at|with|valid)|changed (?:his|her|their|the )?address"
            r"|user not local; please try",
        ),
        (
            Reason.SUSPENDED,
            r"(?:account|mailbox|user)[^.;:]{0,30} suspended|suspended (?:account|mailbox|user)"
            r"|account (?:is )?(?:disabled|inactive|deactivated|locked|closed|expired)"
            r"|mailbox (?:is )?(?:disabled|inactive|deactivated|locked)|inactive (?:user|account)",
        ),
        (
            Reason.USER_UNKNOWN,
            r"user unknown|unknown (?:user|recipient|local part|address)"
            r"|no such (?:user|mailbox|recipient|address|account)"
            r"|(?:user|recipient|mailbox|address|account)[^.;]{0,40}(?:does not|doesn't) exist"
            r"|recipientnotfound|recipient not found|user not found|mailbox not found"
            r"|invalid (?:recipient|mailbox)|unrouteable address|address (?:couldn't|could not)"
            r" be found|not a valid (?:user|mailbox|recipient)|no mailbox here"
            r"|(?:mailbox|address) unavailable|user doesn't have a .{0,20} account"
            r"|unknown or illegal alias|not our customer|undeliverable address|addressee unknown"
            r"|recipient address rejected: access denied",
        ),
        (
            Reason.AUTH_FAILURE,
            r"\bspf\b|\bdmarc\b|\bdkim\b|authentication (?:failed|required)"
            r"|not authenticated|sender (?:identity|authentication)",
        ),
        (
            Reason.SPAM_DETECTED,
            r"\bspam\b|junk ?mail|\buce\b|bulk mail|content (?:rejected|policy|filter)"
            r"|virus|malware|phishing|message (?:content )?(?:was )?(?:rejected|refused) as",
        ),
        (
            Reason.BLOCKED,
            r"block(?:ed|list)|black ?list|dnsbl|\brbl\b|spamhaus|listed (?:in|on|at|by)"
            r"|reputation|client host (?:\[[^\]]*\] )?rejected|refused to talk|banned"
            r"|not allowed to send from|connection refused by policy",
        ),
        (
            Reason.REJECTED,
            r"sender (?:address )?(?:rejected|refused|denied|verify failed|unknown)"
            r"|domain of sender|mail from .{0,40}rejected|sender domain",
        ),
        (
            Reason.EXPIRED,
            r"expired|retry time(?:out)? (?:was )?exceeded|too long in (?:the )?queue"
            r"|queue too long"
            r"|could not be delivered (?:with)?in|delivery time limit|queue lifetime",
        ),
        (
            Reason.NETWORK_ERROR,
            r"connection (?:timed out|refused|reset|lost|closed)|timed out"
            r"|network (?:is )?unreachable"
            r"|no route to host|lost connection|tls (?:handshake )?(?:failed|error)"
            r"|connect to .{0,80} failed",
        ),
        (
            Reason.POLICY,
            r"polic(?:y|ies)|not permitted|relay(?:ing)? (?:access )?(?:denied|not permitted)"
            r"|prohibited|administrative|not allowed",
        ),
    )
)

# RFC 3463 subject.detail (the class decides `permanent`), for when the text says nothing known.
STATUS: dict[str, Reason] = {
    "1.1": Reason.USER_UNKNOWN,
    "1.2": Reason.HOST_UNKNOWN,
    "1.3": Reason.USER_UNKNOWN,
    "1.6": Reason.HAS_MOVED,
    "1.7": Reason.REJECTED,
    "1.8": Reason.REJECTED,
    "1.10": Reason.HOST_UNKNOWN,  # RFC 7505 null MX
    "2.1": Reason.SUSPENDED,
    "2.2": Reason.MAILBOX_FULL,
    "2.3": Reason.MESSAGE_TOO_BIG,
    "3.1": Reason.MAILBOX_FULL,
    "3.4": Reason.MESSAGE_TOO_BIG,
    "4.1": Reason.NETWORK_ERROR,
    "4.2": Reason.NETWORK_ERROR,
    "4.4": Reason.HOST_UNKNOWN,
    "4.7": Reason.EXPIRED,
    "5.3": Reason.POLICY,  # too many recipients
    "7.0": Reason.POLICY,
    "7.1": Reason.POLICY,
    "7.8": Reason.AUTH_FAILURE,
    "7.13": Reason.SUSPENDED,  # RFC 7372 user account disabled
    "7.20": Reason.AUTH_FAILURE,  # RFC 7372: no passing DKIM signature ... up to 7.27 (SPF)
    "7.21": Reason.AUTH_FAILURE,
    "7.22": Reason.AUTH_FAILURE,
    "7.23": Reason.AUTH_FAILURE,
    "7.24": Reason.AUTH_FAILURE,
    "7.25": Reason.AUTH_FAILURE,
    "7.26": Reason.AUTH_FAILURE,
    "7.27": Reason.HOST_UNKNOWN,  # RFC 7505: the sender's domain has a null MX
}

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]\d)")
_REPLY = re.compile(r"(?<![\d.#])([245][0-5]\d)(?:[ :-]|$)")


def find_status(text: str) -> str | None:
    """The first enhanced status code (X.Y.Z) in `text`."""
    match = _STATUS.search(text[:8192])
    return ".".join(match.groups()) if match else None


def find_reply_code(text: str) -> int | None:
    """The first SMTP reply code (e.g. 550) in `text`."""
    match = _REPLY.search(text[:8192])
    return int(match.group(1)) if match else None


def classify(status: str | None, diagnostic: str, reply_code: int | None = None) -> Reason:
    """The reason for `status` and the server's `diagnostic` text (see the module)."""
    text = diagnostic[:8192]
    for reason, pattern in TEXT_PATTERNS:
        if pattern.search(text):
            return reason
    if status:
        _, _, detail = status.partition(".")
        if detail in STATUS:
            return STATUS[detail]
    if reply_code == 552:
        return Reason.MAILBOX_FULL
    return Reason.OTHER


def is_permanent(action: str, status: str | None, reply_code: int | None) -> bool:
    """A hard bounce: failed with a 5.x.x status, or with a 5xx reply when there is no status."""
    if action != "failed":
        return False
    if status:
        return status.startswith("5")
    return reply_code is not None and reply_code >= 500
