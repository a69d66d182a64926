"""Bounces in the outbox: finding the message a bounce is about, and keeping what it says.

`OutboxSentIndex` is the `SentIndex` of `mailbridge.bounces` over the outbox's
own table (envelope id, Message-ID, VERP tag, then a sent message's recipient).
`bounce_records` turns a `BounceEvent` into per-recipient `BounceRecord`s for
the message, trusting only what it may: a heuristic report (no known format,
anyone can write one) counts only when our ENVID or VERP tag ties it to the
message, and only the message's own recipients are ever marked. `proves_sent` says
when a bounce proves that an `outcome_unknown` message did reach the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..bounces._correlate import SentRef, correlate
from ._store import BounceRecord, Row, Store

if TYPE_CHECKING:
    from ..bounces._collector import BounceEvent
    from ..deliverability._suppression import SuppressionList

__all__ = ["BounceHandler", "OutboxSentIndex", "bounce_records", "find_bounced", "proves_sent"]

log = logging.getLogger("mailbridge.outbox")

_ACTIONS = ("failed", "delayed")
_TRUSTED = ("envelope_id", "verp")  # secrets of ours that a forger cannot know


class OutboxSentIndex:
    """A `SentIndex` over an outbox store; remembers the rows it found (by Message-ID)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: dict[str, Row] = {}

    def lookup(self, key: str, value: str) -> SentRef | None:
        """See `mailbridge.bounces.SentIndex`."""
        row = self.store.find(key, value)
        if row is None:
            return None
        self.rows[row.message_id] = row
        return SentRef(row.message_id, row.envelope_id)


def find_bounced(store: Store, event: BounceEvent) -> tuple[Row, str] | None:
    """The outbox message `event` is about and how it was found ("envelope_id", …), or None."""
    index = OutboxSentIndex(store)
    found = correlate(event.report, index=index, verp=event.verp_token)
    row = index.rows.get(found.message_id or "")
    if row is None or found.matched_by is None:
        return None
    return row, found.matched_by


def proves_sent(event: BounceEvent, matched_by: str) -> bool:
    """Whether `event` proves the server took the message it was matched to.

    Only a structured RFC 3464 DSN (a `message/delivery-status` part, any Action:
    failed too, since a later hop refused what the server had taken) found by our
    envelope id. The ENVID is a random secret that travels only in the SMTP envelope
    (`MAIL FROM … ENVID=`), to the tenant's server and the relays after it; a DSN
    that names it was written by one of them, about a message it took. Everything
    else is no proof: a Message-ID is in the headers every recipient sees, a VERP tag
    is in the Return-Path they see too (and is a hash of the Message-ID), anyone can
    name a recipient, and a plain-text or heuristic report is a guess at a format
    anyone can type (ENVIDs come only from RFC 3464 parts, but the source is checked
    all the same); complaints and auto-replies come from recipients, not servers.
    Settling wrongly would be worse than not settling: `sent` is final, so a message
    that never went out would never be sent.
    """
    report = event.report
    return report.kind == "dsn" and report.source == "rfc3464" and matched_by == "envelope_id"


def bounce_records(event: BounceEvent, row: Row, matched_by: str, now: float) -> list[BounceRecord]:
    """What `event` says about `row`'s recipients (failed / delayed), as far as it is trusted."""
    report = event.report
    if report.kind not in ("dsn", "heuristic"):
        return []  # complaints and auto-replies say nothing about delivery
    if report.kind == "heuristic" and matched_by not in _TRUSTED:
        log.warning(
            "bounce report %s:%s not recorded for outbox message %s: no known format and "
            "neither our envelope id nor VERP tag ties it to the message (it may be forged)",
            event.folder,
            event.uid,
            row.id,
        )
        return []
    ours = {address.lower(): address for address in row.recipients}
    records = []
    for recipient in report.recipients:
        if recipient.action not in _ACTIONS:
            continue
        names = (recipient.address, recipient.original_recipient or "")
        address = next((ours[n.lower()] for n in names if n.lower() in ours), None)
        if address is None:  # not a recipient of this message: never mark a stranger
            continue
        records.append(
            BounceRecord(
                recipient=address,
                action=recipient.action,
                status=recipient.status,
                reason=str(recipient.reason),
                diagnostic=recipient.diagnostic,
                kind=report.kind,
                matched_by=matched_by,
                reported_at=now,
            )
        )
    return records


class BounceHandler:
    """`BounceCollector(on_event=…)` for an outbox: `outbox.bounce_handler(suppression=…)`.

    Records each event on its outbox message (idempotent: the collector delivers
    at least once). With `suppression`, a permanent failure from a DSN (never a
    heuristic report) tied to the message by more than a recipient address (which
    anyone could name) also adds the address to that `SuppressionList`.
    """

    def __init__(
        self,
        record: Callable[[BounceEvent], list[BounceRecord]],
        suppression: SuppressionList | None = None,
    ) -> None:
        self.record = record
        self.suppression = suppression

    def __call__(self, event: BounceEvent) -> None:
        records = self.record(event)
        if self.suppression is None or event.report.kind != "dsn":
            return
        permanent = {r.address.lower() for r in event.report.recipients if r.permanent}
        permanent |= {
            r.original_recipient.lower()
            for r in event.report.recipients
            if r.permanent and r.original_recipient
        }
        for record in records:
            if (
                record.action == "failed"
                and record.matched_by != "failed_recipients"
                and record.recipient.lower() in permanent
            ):
                status = record.status if (record.status or "").startswith("5.") else None
                self.suppression.add(
                    record.recipient, reason=record.reason, status=status, detail=record.diagnostic
                )
