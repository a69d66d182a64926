"""What the outbox tells an application about a message: `MessageStatus` and its JSON."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs

from ..diagnosis import Category, Diagnosis
from ..errors import MailbridgeError
from ..reply import SmtpReply
from ._store import BounceRecord, Row, State

__all__ = ["ErrorInfo", "MessageStatus", "error_json", "result_json"]


def _reply_json(reply: SmtpReply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"code": reply.code, "enhanced": reply.enhanced_status, "text": reply.text}


def _reply(value: Any) -> SmtpReply | None:
    if not isinstance(value, dict):
        return None
    return SmtpReply(int(value["code"]), value.get("enhanced"), str(value.get("text", "")))


def result_json(
    accepted: tuple[str, ...],
    refused: dict[str, SmtpReply],
    reply: SmtpReply | None,
    *,
    settled_by: str | None = None,
) -> str:
    """The `result` column: who accepted, who refused (with the reply), the final reply;
    `settled_by` ("sent_folder", "dsn") when an unknown outcome was proven `sent` later."""
    result: dict[str, Any] = {
        "accepted": list(accepted),
        "refused": {address: _reply_json(r) for address, r in refused.items()},
        "reply": _reply_json(reply),
    }
    if settled_by is not None:
        result["settled_by"] = settled_by
    return json.dumps(result)


def error_json(
    error: BaseException, message: str | None = None, diagnosis: Diagnosis | None = None
) -> str:
    """The `error` column for `error` (its type, text, reply and `Diagnosis`).

    Only mailbridge's own errors keep their text (they never hold a secret); of any
    other exception (the application's resolver, a bug) only the type is kept.
    `diagnosis` stands in for the error's own (which only mailbridge's errors have).
    """
    if message is None:
        message = str(error) if isinstance(error, MailbridgeError) else _bare(error)
    reply = getattr(error, "reply", None)
    diagnosis = diagnosis or getattr(error, "diagnosis", None)
    return json.dumps(
        {
            "type": type(error).__name__,
            "message": message,
            "temporary": bool(getattr(error, "temporary", False)),
            "reply": _reply_json(reply) if isinstance(reply, SmtpReply) else None,
            "diagnosis": {
                "category": diagnosis.category.value,
                "summary": diagnosis.summary,
                "hints": list(diagnosis.hints),
            }
            if isinstance(diagnosis, Diagnosis)
            else None,
            "refused": {a: _reply_json(r) for a, r in getattr(error, "refused", {}).items()},
        }
    )


def _bare(error: BaseException) -> str:
    return f"{type(error).__name__} (its text is not stored: it might hold a secret)"


@attrs.frozen
class ErrorInfo:
    """The last error a message met: its type name, text, the server's reply, a `Diagnosis`."""

    type: str
    message: str
    temporary: bool = False
    reply: SmtpReply | None = None
    diagnosis: Diagnosis | None = None
    refused: dict[str, SmtpReply] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, text: str) -> ErrorInfo:
        """Read the `error` column."""
        data = json.loads(text)
        found = data.get("diagnosis")
        diagnosis = None
        if isinstance(found, dict):
            try:
                category = Category(found["category"])
            except ValueError:
                category = Category.PROTOCOL
            diagnosis = Diagnosis(category, str(found["summary"]), tuple(found.get("hints", ())))
        refused = {a: r for a, value in data.get("refused", {}).items() if (r := _reply(value))}
        return cls(
            str(data.get("type", "Error")),
            str(data.get("message", "")),
            bool(data.get("temporary", False)),
            _reply(data.get("reply")),
            diagnosis,
            refused,
        )


def _time(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def _recipients(addresses: tuple[str, ...]) -> str:
    if not addresses:
        return "nobody"
    more = len(addresses) - 1
    return addresses[0] + (f" and {more} more" if more else "")


@attrs.frozen
class MessageStatus:
    """A message's state as a UI shows it next to the document; `summary` is one line.

    `accepted` / `refused` are the per-recipient outcomes of the send (`refused`
    maps an address to the server's reply); `error` is the last error with its
    `Diagnosis`. Times are timezone-aware UTC datetimes. `bounces` maps a recipient
    to what a later bounce said (`Outbox.record_bounce`); `delivery` is "bounced"
    when one recipient bounced, "delayed" when one is only delayed, else None.
    `settled_by` says what proved a `sent` message went out when its send's outcome
    was unknown: "sent_folder" (its copy was found) or "dsn" (a DSN named our envelope id).
    """

    id: str
    tenant: str
    state: State
    message_id: str
    recipients: tuple[str, ...]
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime
    not_before: dt.datetime
    deadline: dt.datetime
    sent_at: dt.datetime | None = None
    wait_reason: str | None = None
    accepted: tuple[str, ...] = ()
    refused: dict[str, SmtpReply] = attrs.field(factory=dict)
    reply: SmtpReply | None = None
    error: ErrorInfo | None = None
    idempotency_key: str | None = None
    size: int = 0
    envelope_id: str | None = None
    delivery: str | None = None
    bounces: dict[str, BounceRecord] = attrs.field(factory=dict)
    settled_by: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> MessageStatus:
        """Build the status from a stored row."""
        result: dict[str, Any] = json.loads(row.result) if row.result else {}
        refused = {a: r for a, value in result.get("refused", {}).items() if (r := _reply(value))}
        return cls(
            id=row.id,
            tenant=row.tenant,
            state=row.state,
            message_id=row.message_id,
            recipients=row.recipients,
            attempts=row.attempts,
            created_at=_time(row.created_at) or dt.datetime.now(dt.UTC),
            updated_at=_time(row.updated_at) or dt.datetime.now(dt.UTC),
            not_before=_time(row.not_before) or dt.datetime.now(dt.UTC),
            deadline=_time(row.deadline) or dt.datetime.now(dt.UTC),
            sent_at=_time(row.sent_at),
            wait_reason=row.wait_reason,
            accepted=tuple(result.get("accepted", ())),
            refused=refused,
            reply=_reply(result.get("reply")),
            error=ErrorInfo.from_json(row.error) if row.error else None,
            idempotency_key=row.idempotency_key,
            size=row.size,
            envelope_id=row.envelope_id,
            delivery=row.delivery,
            bounces={record.recipient: record for record in row.bounces},
            settled_by=result.get("settled_by"),
        )

    @property
    def summary(self) -> str:
        """One line for people: "sent 10:42 to jane@…", "refused: mailbox unavailable", …

        Printable text only: the server's words come from the tenant's server.
        """
        return printable(self._summary())

    def _summary(self) -> str:
        state = self.state
        if self.bounces and state in (State.SENT, State.OUTCOME_UNKNOWN):
            return _bounced(self.bounces)
        if state is State.SENT:
            when = f"{self.sent_at:%H:%M}" if self.sent_at else ""
            line = f"sent {when} to {_recipients(self.accepted or self.recipients)}"
            if self.refused:
                reply = next(iter(self.refused.values()))
                line += f"; refused by {_recipients(tuple(self.refused))}: {_why(reply)}"
            return line
        if state is State.QUEUED:
            return self.wait_reason or "queued"
        if state is State.CLAIMED:
            return "sending"
        if state is State.CANCELLED:
            return "cancelled"
        error = self.error
        if state is State.OUTCOME_UNKNOWN:  # the error says why: a lost answer, a dead worker
            why = error.message if error and error.message else "outcome unknown"
            return f"{why}; check before sending again"
        if state is State.PARKED:
            return f"parked: {error.message if error else 'needs attention'}"
        if error is not None and error.refused:
            return f"refused: {_why(next(iter(error.refused.values())))}"
        if error is not None and error.reply is not None and error.reply.code >= 500:
            return f"refused: {_why(error.reply)}"
        if error is not None and error.diagnosis is not None:
            return f"failed: {error.diagnosis.summary}"
        return f"failed: {error.message if error else 'unknown error'}"


def printable(text: str) -> str:
    """`text` without control characters (a hostile server's terminal escapes, NULs)."""
    return "".join(char if char.isprintable() else " " for char in text)


def _why(reply: SmtpReply) -> str:
    text = reply.text.split("\n", 1)[0].strip()
    return text or str(reply)


def _bounced(bounces: dict[str, BounceRecord]) -> str:
    """ "bounced: mailbox full (5.2.2) jane@…" for the first bounced (else delayed) recipient."""
    failed = [r for r in bounces.values() if r.action == "failed"]
    shown = failed or list(bounces.values())
    first = shown[0]
    code = f" ({first.status})" if first.status else ""
    what = "bounced" if failed else "delayed"
    more = len(shown) - 1
    line = f"{what}: {first.reason.replace('_', ' ')}{code} {first.recipient}"
    return line + (f" and {more} more" if more else "")
