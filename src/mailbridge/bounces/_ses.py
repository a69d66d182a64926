"""Amazon SES bounce and complaint notifications (JSON, as SES sends them by email or SNS)."""

from __future__ import annotations

import json
from typing import Any

from ._model import BounceRecipient, BounceReport, Reason
from ._reasons import classify, find_reply_code, find_status, is_permanent

__all__ = ["parse_ses"]

MAX_JSON = 256 * 1024


def _notification(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    head = text[:MAX_JSON]
    if start == -1 or ("notificationType" not in head and "eventType" not in head):
        return None
    try:
        data = json.loads(text[start : start + MAX_JSON].strip())
    except (ValueError, RecursionError):  # RecursionError: hostile nesting in the json module
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):  # wrapped by SNS
        try:
            data = json.loads(data["Message"][:MAX_JSON])
        except (ValueError, RecursionError):
            return None
    return data if isinstance(data, dict) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_ses(text: str) -> BounceReport | None:
    """A report from an SES notification's JSON; None when it is not a bounce or complaint."""
    data = _notification(text)
    if data is None:
        return None
    kind = _str(data.get("notificationType") or data.get("eventType"))
    mail = data.get("mail")
    headers = mail.get("commonHeaders") if isinstance(mail, dict) else None
    message_id = _str(headers.get("messageId")) or None if isinstance(headers, dict) else None
    if kind == "Bounce" and isinstance(data.get("bounce"), dict):
        bounce = data["bounce"]
        bounce_type = _str(bounce.get("bounceType"))
        recipients = [
            _bounced(entry, bounce_type, _str(bounce.get("bounceSubType")))
            for entry in bounce.get("bouncedRecipients") or []
            if isinstance(entry, dict) and "@" in _str(entry.get("emailAddress"))
        ][:500]
        return BounceReport(
            kind="dsn",
            recipients=tuple(recipients),
            source="amazon_ses",
            original_message_id=message_id,
            reporting_mta=_str(bounce.get("reportingMTA")).rpartition(";")[2].strip() or None,
        )
    if kind == "Complaint" and isinstance(data.get("complaint"), dict):
        complaint = data["complaint"]
        recipients = [
            BounceRecipient(
                address=_str(entry.get("emailAddress")),
                action="delivered",
                status=None,
                reason=Reason.OTHER,
                permanent=False,
            )
            for entry in complaint.get("complainedRecipients") or []
            if isinstance(entry, dict) and "@" in _str(entry.get("emailAddress"))
        ][:500]
        return BounceReport(
            kind="arf",
            recipients=tuple(recipients),
            source="amazon_ses",
            original_message_id=message_id,
            feedback_type=_str(complaint.get("complaintFeedbackType")) or "abuse",
        )
    return None


def _bounced(entry: dict[str, Any], bounce_type: str, subtype: str) -> BounceRecipient:
    """One bounced recipient; "Undetermined" (SES could not tell why) is no hard bounce."""
    temporary = bounce_type == "Transient"
    diagnostic = _str(entry.get("diagnosticCode"))
    _, _, text = diagnostic.partition(";")
    text = (text or diagnostic).strip()[:2000]
    status = find_status(_str(entry.get("status"))) or find_status(text)
    reply_code = find_reply_code(text)
    action = _str(entry.get("action")) or ("delayed" if temporary else "failed")
    if action not in ("failed", "delayed", "delivered", "relayed", "expanded"):
        action = "failed"
    subtype_reason = {
        "NoEmail": Reason.USER_UNKNOWN,
        "Suppressed": Reason.BLOCKED,
        "OnAccountSuppressionList": Reason.BLOCKED,
        "MailboxFull": Reason.MAILBOX_FULL,
        "MessageTooLarge": Reason.MESSAGE_TOO_BIG,
        "ContentRejected": Reason.SPAM_DETECTED,
    }.get(subtype)
    if status is None and bounce_type != "Undetermined":
        status = "4.0.0" if temporary else "5.0.0"
    reason = classify(status, text, reply_code)
    if reason == Reason.OTHER and subtype_reason is not None:
        reason = subtype_reason
    return BounceRecipient(
        address=_str(entry.get("emailAddress")),
        action=action,
        status=status,
        reason=reason,
        permanent=is_permanent(action, status, reply_code),
        reply_code=reply_code,
        diagnostic=text,
        remote_mta=None,
    )
