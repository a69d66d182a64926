"""What happened to each Django message and each of its recipients (`message.mailbridge_result`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from .._client import SendResult
from ..errors import MailbridgeError, RecipientsRefused
from ..reply import SmtpReply

__all__ = ["RecipientStatus", "SendStatus", "failed_status", "queued_status", "sent_status"]


@attrs.frozen
class RecipientStatus:
    """One recipient: `status` is "accepted", "refused", "failed" or "queued"; `reply` the
    server's."""

    status: str
    reply: SmtpReply | None = None


@attrs.frozen
class SendStatus:
    """Set on each message as `message.mailbridge_result` by the backend.

    `status` is "sent" (every recipient accepted), "partial" (some refused), "failed", or
    in outbox mode "queued" (`outbox_id` is set once the caller's transaction commits);
    `recipients` maps each envelope address to its `RecipientStatus`; `result` is the
    `SendResult` of a sent message, `error` the `MailbridgeError` of a failed one.
    """

    status: str
    message_id: str | None
    recipients: Mapping[str, RecipientStatus]
    result: SendResult | None = attrs.field(default=None, repr=False)
    error: MailbridgeError | None = attrs.field(default=None, repr=False)
    outbox_id: str | None = None


def sent_status(result: SendResult) -> SendStatus:
    """The status of a message the server took (perhaps not for every recipient)."""
    recipients = {address: RecipientStatus("accepted") for address in result.accepted}
    recipients.update(
        {address: RecipientStatus("refused", reply) for address, reply in result.refused.items()}
    )
    return SendStatus(
        "partial" if result.refused else "sent", result.message_id, recipients, result=result
    )


def failed_status(
    error: MailbridgeError, recipients: Sequence[str], message_id: str | None
) -> SendStatus:
    """The status of a message that was not sent; refused recipients keep their reply."""
    refused = error.refused if isinstance(error, RecipientsRefused) else {}
    statuses = {
        address: RecipientStatus("refused", refused[address])
        if address in refused
        else RecipientStatus("failed", getattr(error, "reply", None))
        for address in recipients
    }
    return SendStatus("failed", message_id, statuses, error=error)


def queued_status(recipients: Sequence[str], message_id: str) -> SendStatus:
    """The status of a message handed to the outbox (its id follows on commit)."""
    return SendStatus("queued", message_id, {a: RecipientStatus("queued") for a in recipients})
