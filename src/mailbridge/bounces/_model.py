"""What a parsed bounce says: `BounceReport`, one `BounceRecipient` per address, `Reason`."""

from __future__ import annotations

import enum

import attrs

__all__ = ["ACTIONS", "KINDS", "BounceRecipient", "BounceReport", "Reason"]

KINDS = ("dsn", "arf", "auto_reply", "heuristic")
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")


class Reason(enum.StrEnum):
    """Why a message was not delivered; a fixed vocabulary (see docs/bounces.md).

    Members are strings: `report.recipients[0].reason == "mailbox_full"` works.
    """

    USER_UNKNOWN = "user_unknown"
    MAILBOX_FULL = "mailbox_full"
    HOST_UNKNOWN = "host_unknown"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    SPAM_DETECTED = "spam_detected"
    POLICY = "policy"
    MESSAGE_TOO_BIG = "message_too_big"
    EXPIRED = "expired"
    NETWORK_ERROR = "network_error"
    AUTH_FAILURE = "auth_failure"
    HAS_MOVED = "has_moved"
    SUSPENDED = "suspended"
    RATE_LIMITED = "rate_limited"
    OTHER = "other"


@attrs.frozen
class BounceRecipient:
    """What happened to one recipient.

    `status` is the RFC 3463 enhanced status ("5.1.1"), None when the report
    gives none (complaints, auto-replies); `reply_code` the SMTP reply code
    the remote server gave, when known; `diagnostic` its text; `remote_mta`
    the server that answered. `permanent` is True for a hard bounce: the
    delivery failed with a 5.x.x status (or 5xx reply), retrying will not help.
    """

    address: str
    action: str = attrs.field(validator=attrs.validators.in_(ACTIONS))
    status: str | None
    reason: Reason
    permanent: bool
    reply_code: int | None = None
    diagnostic: str = ""
    remote_mta: str | None = None
    original_recipient: str | None = None

    @property
    def summary(self) -> str:
        """For people: "bounced: mailbox full (5.2.2)", "delayed: network error (4.4.1)"."""
        what = {"failed": "bounced"}.get(self.action, self.action)
        code = f" ({self.status})" if self.status else ""
        return f"{what}: {self.reason.replace('_', ' ')}{code}"


@attrs.frozen
class BounceReport:
    """A parsed bounce, complaint or auto-reply.

    `kind`: "dsn" (a delivery status notification: RFC 3464/6533, or a known
    server's own format, named by `source`), "arf" (a complaint: RFC 5965
    feedback report or a provider's complaint notification), "auto_reply"
    (RFC 3834: an out-of-office answer, not a bounce) or "heuristic" (no known
    format matched; recipients and status were found by generic patterns, so
    check before acting on it). `original_*` identify the message that
    bounced: its Message-ID (from the returned headers), the ENVID we sent with
    it (RFC 3461), and the original recipient when the report names it.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    recipients: tuple[BounceRecipient, ...]
    source: str
    original_message_id: str | None = None
    original_envelope_id: str | None = None
    original_recipient: str | None = None
    reporting_mta: str | None = None
    feedback_type: str | None = None  # ARF: abuse, fraud, virus, other, not-spam
    subject: str = ""
    failed_recipients: tuple[str, ...] = ()  # the X-Failed-Recipients header, as given

    @property
    def permanent(self) -> bool:
        """True when at least one recipient hard-bounced."""
        return any(r.permanent for r in self.recipients)
