"""The store seam: the rows an outbox keeps and the one protocol every database implements.

`SqlStore` (in `_sql.py`) implements it over a small `Dialect`; SQLite and
PostgreSQL differ only there. Times are UNIX seconds (float, UTC) in both.

Clocks: every method that changes rows takes the caller's `now`, and every other time
it takes (`not_before`, `until`, a message's `created_at`/`not_before`/`deadline`) is
read relative to that `now`. A store without a clock of its own (SQLite: one machine)
uses them as they are; PostgreSQL moves them by how far the server's clock is ahead of
the caller's, so leases and due times are written and compared by ONE clock across
machines, and the `Claimed` it returns carries its times back in the caller's terms.
Stored times (`Row`, `next_due`) are the store's.

Pacing: `TenantLimits.per_minute` / `per_day` (messages) and `per_minute_recipients` /
`per_day_recipients` (recipients) hold over any sliding minute / day (a log of claims
per tenant with each one's recipient count); claims visit tenants round-robin (fairness).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from ..composer import PreparedMessage

__all__ = [
    "FINAL_STATES",
    "BounceRecord",
    "Claimed",
    "Envelope",
    "NewMessage",
    "Outcome",
    "Row",
    "State",
    "Store",
    "TenantLimits",
]


class State(enum.StrEnum):
    """Where a message is: `queued → claimed → sent | outcome_unknown | failed | parked`."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    SENT = "sent"
    OUTCOME_UNKNOWN = "outcome_unknown"
    FAILED = "failed"
    PARKED = "parked"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({State.SENT, State.FAILED, State.CANCELLED})
"""States `purge()` may delete; `outcome_unknown` and `parked` wait for a person."""


@attrs.frozen
class TenantLimits:
    """A tenant's sending limits, enforced in the database across every worker.

    `provider` is the name shown in reasons ("waiting: Gmail daily limit");
    `per_minute` / `per_day` count messages claimed in any sliding minute / day,
    `per_minute_recipients` / `per_day_recipients` their recipients; `in_flight`
    bounds the tenant's messages claimed at once. None means no limit.
    """

    provider: str
    per_minute: int | None = None
    per_day: int | None = None
    in_flight: int | None = None
    per_minute_recipients: int | None = attrs.field(default=None, kw_only=True)
    per_day_recipients: int | None = attrs.field(default=None, kw_only=True)


@attrs.frozen(kw_only=True)
class Envelope:
    """What is stored to send a message: the exact bytes and the SMTP envelope."""

    id: str
    tenant: str
    message_id: str
    envelope_sender: str
    recipients: tuple[str, ...]
    bcc: tuple[str, ...]
    smtputf8: bool
    mode: str
    note: str | None
    data: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")
    envelope_id: str | None = None  # the DSN envelope id (RFC 3461 ENVID) bounces will name

    @staticmethod
    def fields_of(prepared: PreparedMessage) -> dict[str, Any]:
        """`prepared` as keywords of an `Envelope` (its every field is one, by the same name)."""
        return attrs.asdict(prepared, recurse=False)

    def prepared(self) -> PreparedMessage:
        """The `PreparedMessage` to send: the inverse of `fields_of`."""
        from ..composer import PreparedMessage  # the composer loads only where one is sent

        names = (field.name for field in attrs.fields(PreparedMessage))
        return PreparedMessage(**{name: getattr(self, name) for name in names})


@attrs.frozen(kw_only=True)
class NewMessage(Envelope):
    """A composed message as `Store.enqueue` stores it (exact bytes and envelope)."""

    idempotency_key: str | None
    created_at: float
    not_before: float
    deadline: float
    limits: TenantLimits | None = None  # None keeps the tenant's; no figures: removes them
    verp_token: str | None = None  # relay mode: the tag of its VERP bounce address


@attrs.frozen(kw_only=True)
class Claimed(Envelope):
    """A message a worker holds under a lease: everything needed to send it.

    `recovering` is True when the row was taken over from an expired lease: the
    previous holder may have transmitted it, so it must not be sent blindly.
    """

    attempts: int
    created_at: float
    deadline: float
    lease_owner: str
    lease_expires: float
    recovering: bool = False


@attrs.frozen
class Outcome:
    """What to record for a claimed message: a final `state`, or `queued` again.

    For `queued`: `not_before` and `reason` say when and why; `count_attempt=False`
    takes back the attempt the claim counted (nothing was tried). `result` / `error`
    are the JSON documents of the `result` and `error` columns.
    """

    id: str
    state: State
    result: str | None = None
    error: str | None = None
    not_before: float | None = None
    reason: str | None = None
    count_attempt: bool = True


@attrs.frozen
class Row:
    """A message's stored state without its bytes (what `status()` and `messages()` read).

    `result` and `error` are the JSON documents the worker recorded (see OUTBOX_STORE.md).
    """

    id: str
    tenant: str
    idempotency_key: str | None
    state: State
    message_id: str
    envelope_sender: str
    recipients: tuple[str, ...]
    size: int
    attempts: int
    created_at: float
    updated_at: float
    not_before: float
    deadline: float
    wait_reason: str | None
    sent_at: float | None
    lease_owner: str | None
    lease_expires: float | None
    result: str | None
    error: str | None
    envelope_id: str | None = None
    delivery: str | None = None  # "bounced" / "delayed": the worst of `bounces`
    bounces: tuple[BounceRecord, ...] = ()


@attrs.frozen
class BounceRecord:
    """What a bounce said about one recipient of a message (kept per message and address).

    `action` is "failed" (bounced) or "delayed"; `status` the RFC 3463 status,
    `reason` a `mailbridge.bounces.Reason` value, `diagnostic` the remote server's
    text; `kind` the report's kind and `matched_by` how it was tied to the message.
    """

    recipient: str
    action: str
    status: str | None
    reason: str
    diagnostic: str
    kind: str
    matched_by: str
    reported_at: float


@runtime_checkable
class Store(Protocol):
    """What an outbox needs from a database. Every method is one short transaction.

    Methods that change a claimed row (`finish`, `reschedule`, `release`,
    `renew`) only act while `owner` still holds the row's lease and return
    whether they did; a worker whose lease was taken over changes nothing.
    """

    url: str

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version now in place."""
        ...

    def schema_version(self) -> int:
        """The schema version in the database (0: none yet)."""
        ...

    def enqueue(self, message: NewMessage) -> tuple[str, bool]:
        """Store `message` unless (tenant, idempotency_key) exists: (id, created)."""
        ...

    def claim(self, owner: str, *, limit: int, lease: float, now: float) -> list[Claimed]:
        """Take up to `limit` due messages under a lease until `now + lease`.

        Due: `queued` with `not_before <= now`, and `claimed` whose lease expired
        (returned with `recovering=True`). Tenant limits are applied here: a message
        over a per-minute/per-day limit is left `queued` with `not_before` at the
        window's end and a `wait_reason`; one over `in_flight` is skipped.
        """
        ...

    def exchange(
        self, outcomes: Sequence[Outcome], owner: str, *, limit: int, lease: float, now: float
    ) -> tuple[list[bool], list[Claimed]]:
        """`record(outcomes)` and `claim(limit=…)` in one transaction (a worker's loop)."""
        ...

    def claim_one(self, id: str, owner: str, *, lease: float, now: float) -> Claimed | None:
        """Like `claim`, for the one message `id`; None when it is not due or not free."""
        ...

    def record(self, outcomes: Sequence[Outcome], owner: str, *, now: float) -> list[bool]:
        """Record several outcomes in one transaction; for each, whether `owner` still held it.

        A final state clears the lease (`sent` also sets `sent_at`); `queued` puts the
        message back until `not_before` with `reason` as its `wait_reason`.
        """
        ...

    def finish(
        self,
        id: str,
        owner: str,
        state: State,
        *,
        now: float,
        result: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Record a final outcome (`sent`, `failed`, `outcome_unknown`, `parked`)."""
        ...

    def reschedule(
        self,
        id: str,
        owner: str,
        *,
        now: float,
        not_before: float,
        reason: str,
        error: str | None = None,
        count_attempt: bool = True,
    ) -> bool:
        """Back to `queued` until `not_before`, with a reason; `count_attempt=False`
        takes back the attempt the claim counted (nothing was tried)."""
        ...

    def release(self, ids: Sequence[str], owner: str, *, now: float) -> int:
        """Give claimed messages back untried (`queued`, attempt not counted)."""
        ...

    def renew(
        self, ids: Sequence[str], owner: str, *, until: float, now: float | None = None
    ) -> int:
        """Extend the leases `owner` holds on `ids` to `until` (by the caller's clock, whose
        reading is `now`; time.time() when None); returns how many it still held."""
        ...

    def get(self, id: str) -> Row | None:
        """The message `id`, or None."""
        ...

    def rows(
        self,
        *,
        tenant: str | None = None,
        state: State | None = None,
        limit: int = 100,
        offset: int = 0,
        delivery: str | None = None,
    ) -> list[Row]:
        """Messages, newest first, filtered by tenant, state and `delivery` ("bounced", …)."""
        ...

    def find(self, key: str, value: str) -> Row | None:
        """The newest message whose `key` is `value`: "envelope_id", "message_id", "verp"
        (its VERP tag) or "recipient" (a sent message to that address, any case)."""
        ...

    def record_bounces(
        self,
        id: str,
        records: Sequence[BounceRecord],
        *,
        settle: bool = False,
        now: float | None = None,
    ) -> bool:
        """Keep what bounces said about message `id`'s recipients; whether anything changed.

        Idempotent: the same record again changes nothing; a "delayed" never
        replaces a "failed" (a bounce is final). With `settle` (the caller has proof
        that the server took the message: a DSN naming our envelope id), a message
        still `outcome_unknown` becomes `sent` in the same transaction (`now`: the
        caller's clock); any other state is left as it is (what came first wins).
        """
        ...

    def counts(self, *, tenant: str | None = None) -> dict[State, int]:
        """How many messages are in each state."""
        ...

    def next_due(self) -> float | None:
        """The earliest `not_before` of a queued message or lease expiry, or None."""
        ...

    def retry(self, id: str, *, now: float, force: bool = False) -> bool:
        """`failed`, `parked`, `cancelled` (and with `force`, `outcome_unknown`) → `queued`."""
        ...

    def cancel(self, id: str, *, now: float) -> bool:
        """`queued` → `cancelled`; False when it is no longer queued."""
        ...

    def purge(self, *, before: float) -> int:
        """Delete `sent`, `failed` and `cancelled` messages last updated before `before`."""
        ...

    def notify(self) -> None:
        """Wake workers waiting in `wait` (PostgreSQL: NOTIFY; SQLite: in-process)."""
        ...

    def wait(self, timeout: float) -> None:
        """Block up to `timeout` seconds or until `notify` (a worker's idle wait)."""
        ...

    def close(self) -> None:
        """Close the connection(s)."""
        ...
