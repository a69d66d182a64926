"""Outbox mode: `send_messages` checks each message, stores it in the durable outbox when the
caller's transaction commits, and returns at once; the outbox's workers (or your `dispatch`,
e.g. a Celery task) send it, with retries, pacing and statuses (see docs/django.md)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import attrs
from django.db import transaction

from .._client import DeliveryClient
from ..composer import PreparedMessage
from ..errors import ConfigurationError, MailbridgeError
from ._status import failed_status

if TYPE_CHECKING:
    from ..outbox import Outbox

__all__ = ["check_outbox_value", "enqueue_on_commit", "outbox_at"]

log = logging.getLogger("mailbridge.django")
_lock = threading.Lock()
_opened: dict[str, Outbox] = {}


def check_outbox_value(value: Any) -> None:
    """Refuse an OUTBOX option that is neither an `Outbox` nor a URL (nothing is opened)."""
    from ..outbox import Outbox

    if not isinstance(value, Outbox) and (not isinstance(value, str) or "://" not in value):
        raise ConfigurationError(
            "OUTBOX", 'give the outbox URL ("sqlite:///var/outbox.db", "postgresql://...")'
        )


def outbox_at(value: Any) -> Outbox:
    """The `Outbox` given, or the one at URL `value`, opened once per process."""
    from ..outbox import Outbox

    if isinstance(value, Outbox):
        return value
    check_outbox_value(value)
    with _lock:
        if value not in _opened:
            _opened[value] = Outbox.open(value)
        return _opened[value]


def enqueue_on_commit(
    message: Any,
    tenant: str,
    client: DeliveryClient,
    prepared: PreparedMessage,
    *,
    outbox: Outbox,
    dispatch: Any,
    database: str,
) -> None:
    """Store `prepared` for `tenant` when the transaction on `database` commits (at once
    outside one); then `dispatch(id)`, and `message.mailbridge_result.outbox_id` is set.

    After a commit nothing is raised into the caller's `atomic()` (its data is committed;
    Django would skip the other on-commit hooks, other messages among them): a message
    the outbox could not store gets a "failed" status and an error in the log; a dispatch
    that fails is logged, and the stored message waits for a worker.
    """

    def store() -> None:
        id = outbox.enqueue(tenant, prepared, client=client, idempotency_key=prepared.message_id)
        message.mailbridge_result = attrs.evolve(message.mailbridge_result, outbox_id=id)
        if dispatch is None:
            return
        try:
            dispatch(id)
        except Exception:  # the application's task queue, e.g. its broker is down
            log.warning(
                "outbox message %s is stored, but dispatching it failed; a worker sends it",
                id,
                exc_info=True,
            )

    def store_after_commit() -> None:
        try:
            store()
        except MailbridgeError as exc:
            message.mailbridge_result = failed_status(exc, prepared.recipients, prepared.message_id)
            log.error("message %s committed but not stored: %s", prepared.message_id, exc)

    if not transaction.get_connection(database).in_atomic_block:
        store()  # at once: a message the outbox refuses raises in the caller
        return
    # robust: a bug in storing is logged by Django and the other hooks still run
    transaction.on_commit(store_after_commit, using=database, robust=True)
