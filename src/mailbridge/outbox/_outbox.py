"""`Outbox`: durable delivery. Enqueue in the caller's transaction of work, send from workers."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..composer import PreparedMessage, check_transmittable
from ..errors import ConfigurationError, MessageError, OutboxError
from ._limits import check_recipients, limits_for
from ._open import open_store
from ._schema import SCHEMA_VERSION
from ._sending import Backoff, ResolveClient, Sender
from ._status import MessageStatus
from ._store import BounceRecord, Claimed, NewMessage, State, Store, TenantLimits

if TYPE_CHECKING:
    from .._client import DeliveryClient
    from .._message import DocumentEmail
    from ..bounces._collector import BounceEvent
    from ..deliverability._suppression import SuppressionList
    from ..providers._registry import ProviderRegistry
    from ._bounce_state import BounceHandler, OutboxSentIndex
    from ._worker import Worker

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_LEASE", "MAX_MESSAGE_SIZE", "Outbox"]

log = logging.getLogger("mailbridge.outbox")

DEFAULT_DEADLINE = dt.timedelta(days=2)
DEFAULT_LEASE = 60.0  # seconds; workers renew the leases of messages in flight
MAX_MESSAGE_SIZE = 35 * 1024 * 1024  # octets as transmitted (Exchange Online's default)
MAX_TENANT_LENGTH = 200


def _seconds(value: dt.datetime | dt.timedelta | float | None, now: float, field: str) -> float:
    """An absolute time in UNIX seconds from a datetime, a delay, or seconds from now."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ConfigurationError(field, "must be a timezone-aware datetime")
        return value.timestamp()
    if isinstance(value, dt.timedelta):
        return now + value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return now + float(value)
    raise ConfigurationError(field, "must be a datetime, a timedelta or seconds")


def _check_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not tenant.strip():
        raise ConfigurationError("tenant", "must be a non-empty string (your key for the account)")
    if len(tenant) > MAX_TENANT_LENGTH or not tenant.isprintable():
        raise ConfigurationError(
            "tenant", f"must be printable text of at most {MAX_TENANT_LENGTH} characters"
        )
    return tenant


def _verp_tag(prepared: PreparedMessage) -> str | None:
    """Relay mode: TOKEN of a ``bounces+TOKEN@domain`` envelope sender (VERP), else None."""
    local = prepared.envelope_sender.rpartition("@")[0]
    if prepared.mode != "relay" or "+" not in local:
        return None
    return local.rpartition("+")[2] or None


class Outbox:
    """A durable queue of prepared messages in SQLite or PostgreSQL, drained by workers.

    Open it with `Outbox.open(url)`. `enqueue()` composes and validates in the
    caller (bad input raises at once, nothing is stored) and stores the exact
    bytes; workers (`worker()`, Celery's `deliver()`) send them. The outbox
    never stores passwords or tokens: `resolve_client(tenant)` is your function
    that builds the tenant's `DeliveryClient` when one is needed.
    """

    def __init__(
        self,
        store: Store,
        *,
        resolve_client: ResolveClient | None = None,
        deadline: dt.timedelta = DEFAULT_DEADLINE,
        max_message_size: int = MAX_MESSAGE_SIZE,
        registry: ProviderRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(deadline, dt.timedelta) or deadline.total_seconds() <= 0:
            raise ConfigurationError("deadline", "must be a positive timedelta")
        if not isinstance(max_message_size, int) or max_message_size < 1:
            raise ConfigurationError("max_message_size", "must be a positive number of octets")
        self.store = store
        self.resolve_client = resolve_client
        self.deadline = deadline
        self.max_message_size = max_message_size
        self.registry = registry
        self.clock = clock

    @classmethod
    def open(
        cls,
        url: str,
        *,
        resolve_client: ResolveClient | None = None,
        migrate: bool = True,
        **options: Any,
    ) -> Outbox:
        """Open the outbox at `url` (`sqlite:///path/outbox.db` or `postgresql://…`).

        The schema is created or upgraded unless `migrate=False`, which instead
        refuses a database whose schema is older than this code (`OutboxError`).
        Other keywords are `Outbox`'s: `deadline`, `max_message_size`, `registry`, `clock`.
        """
        store = open_store(url)
        try:
            version = store.migrate() if migrate else store.schema_version()
            if version != SCHEMA_VERSION:
                raise OutboxError(
                    f"the outbox schema is version {version}, this code needs {SCHEMA_VERSION}: "
                    "run `mailbridge outbox migrate`"
                )
            return cls(store, resolve_client=resolve_client, **options)
        except BaseException:
            store.close()
            raise

    def __repr__(self) -> str:
        return f"<Outbox {self.store!r}>"

    # -- enqueueing --------------------------------------------------------------

    def enqueue(
        self,
        tenant: str,
        email: DocumentEmail | PreparedMessage,
        *,
        idempotency_key: str | None = None,
        not_before: dt.datetime | dt.timedelta | float | None = None,
        deadline: dt.datetime | dt.timedelta | None = None,
        client: DeliveryClient | None = None,
        dispatch: Callable[[str], object] | None = None,
    ) -> str:
        """Store `email` for `tenant` and return its outbox id.

        A `DocumentEmail` is composed now with `client.prepare` (`client`, or
        `resolve_client(tenant)`), so invalid addresses, header injection,
        missing placeholders and oversized messages raise here as `MessageError`s
        and nothing is stored; so does a message with more recipients than the
        provider lets the mailbox send in a whole minute or day (`TooManyRecipients`).
        The same `idempotency_key` (per tenant) twice returns the first id and stores
        nothing. `not_before` delays sending; temporary failures are retried until
        `deadline` (default: the outbox's, two days). `dispatch(id)` (e.g. a Celery
        task's `delay`) is called after the row is committed, also for a repeated key
        whose message is still queued; if it raises (the broker is down) the id is
        returned all the same, as the message is stored: a Celery sweep or a worker
        sends it.
        """
        tenant = _check_tenant(tenant)
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str)
            or not idempotency_key
            or len(idempotency_key) > 200
        ):
            raise ConfigurationError("idempotency_key", "must be a string of 1 to 200 characters")
        now = self.clock()
        prepared, client = self._prepare(tenant, email, client)
        limits = None
        if client is not None:
            limits = limits_for(client, prepared.envelope_sender, self.registry)
            check_recipients(limits, len(prepared.recipients))
            # no figures for the provider it sends through now: forget earlier ones
            limits = limits or TenantLimits("")
        message = NewMessage(
            id=uuid.uuid4().hex,
            tenant=tenant,
            idempotency_key=idempotency_key,
            **NewMessage.fields_of(prepared),
            verp_token=_verp_tag(prepared),
            created_at=now,
            not_before=now if not_before is None else _seconds(not_before, now, "not_before"),
            deadline=_seconds(deadline if deadline is not None else self.deadline, now, "deadline"),
            limits=limits,
        )
        id, created = self.store.enqueue(message)
        if dispatch is not None and (created or self._state(id) is State.QUEUED):
            try:
                dispatch(id)
            except Exception as exc:  # the message is stored: raising would invite a resend
                log.warning(
                    "outbox: dispatching %s failed (%s); a sweep or a worker will send it",
                    id,
                    type(exc).__name__,
                )
        return id

    def _prepare(
        self, tenant: str, email: object, client: DeliveryClient | None
    ) -> tuple[PreparedMessage, DeliveryClient | None]:
        from .._message import DocumentEmail  # loaded on first use, like the package

        if isinstance(email, PreparedMessage):
            if not email.recipients:
                raise MessageError("recipients", "a prepared message needs recipients")
            check_transmittable(email.data)
            prepared = email
            if client is None and self.resolve_client is not None:
                client = self.resolve_client(tenant)
        elif isinstance(email, DocumentEmail):
            if client is None:
                if self.resolve_client is None:
                    raise ConfigurationError(
                        "client",
                        "pass client= or open the outbox with resolve_client= to compose the email",
                    )
                client = self.resolve_client(tenant)
            prepared = client.prepare(email)
        else:
            raise TypeError(
                f"expected DocumentEmail or PreparedMessage, got {type(email).__name__}"
            )
        if len(prepared.data) > self.max_message_size:
            raise MessageError(
                "attachments",
                f"the message is {len(prepared.data) / 1048576:.1f} MiB; the outbox takes at most "
                f"{self.max_message_size / 1048576:.1f} MiB (send large documents as links)",
            )
        return prepared, client

    # -- reading -----------------------------------------------------------------

    def status(self, id: str) -> MessageStatus:
        """The message's state, outcome per recipient, last error and a one-line summary."""
        row = self.store.get(id)
        if row is None:
            raise OutboxError(f"no message {id!r} in this outbox")
        return MessageStatus.from_row(row)

    def _state(self, id: str) -> State | None:
        """Just the state of message `id` (None when unknown)."""
        row = self.store.get(id)
        return None if row is None else row.state

    def messages(
        self,
        *,
        tenant: str | None = None,
        state: State | str | None = None,
        limit: int = 100,
        offset: int = 0,
        delivery: str | None = None,
    ) -> list[MessageStatus]:
        """Messages, newest first, of one tenant and/or in one state; `delivery="bounced"`
        (or "delayed") keeps those a bounce reported a recipient of as bounced (delayed)."""
        wanted = None if state is None else State(state)
        if delivery not in (None, "bounced", "delayed"):
            raise ConfigurationError("delivery", 'must be "bounced", "delayed" or None')
        rows = self.store.rows(
            tenant=tenant, state=wanted, limit=limit, offset=offset, delivery=delivery
        )
        return [MessageStatus.from_row(row) for row in rows]

    def counts(self, *, tenant: str | None = None) -> dict[State, int]:
        """How many messages are in each state."""
        return self.store.counts(tenant=tenant)

    # -- bounces -----------------------------------------------------------------

    def sent_index(self) -> OutboxSentIndex:
        """A `mailbridge.bounces.SentIndex` over this outbox (for `BounceCollector(index=…)`)."""
        from ._bounce_state import OutboxSentIndex

        return OutboxSentIndex(self.store)

    def record_bounce(self, event: BounceEvent) -> MessageStatus | None:
        """Keep what a bounce says about its outbox message's recipients; idempotent.

        The message is found by envelope id, Message-ID, VERP tag, then a failed
        recipient (see docs/outbox.md); None when it is not in this outbox. Each
        recipient the report names becomes `bounced` or `delayed` in
        `status(id).bounces`. A heuristic report counts only when our envelope id
        or VERP tag ties it to the message (anyone can mail a fake bounce). An RFC
        3464 DSN found by our envelope id proves the server took the message: an
        `outcome_unknown` one becomes `sent` (with its bounces, in one transaction).
        """
        id = self._record_bounce(event)[0]
        return None if id is None else self.status(id)

    def _record_bounce(self, event: BounceEvent) -> tuple[str | None, list[BounceRecord]]:
        from ._bounce_state import bounce_records, find_bounced, proves_sent

        found = find_bounced(self.store, event)
        if found is None:
            return None, []
        now = self.clock()
        records = bounce_records(event, *found, now)
        settle = proves_sent(event, found[1])
        self.store.record_bounces(found[0].id, records, settle=settle, now=now)
        return found[0].id, records

    def bounce_handler(self, *, suppression: SuppressionList | None = None) -> BounceHandler:
        """An `on_event` for `BounceCollector`: records bounces here; with `suppression`,
        permanent DSN failures (never heuristic reports) are added to that list."""
        from ._bounce_state import BounceHandler

        return BounceHandler(lambda event: self._record_bounce(event)[1], suppression)

    # -- operator actions --------------------------------------------------------

    def retry(self, id: str, *, force: bool = False) -> bool:
        """Queue a `failed`, `parked` or `cancelled` message again; an `outcome_unknown`
        one only with `force=True` (it may arrive twice). False if its state does not allow it."""
        self.status(id)
        return self.store.retry(id, now=self.clock(), force=force)

    def cancel(self, id: str) -> bool:
        """Withdraw a `queued` message; False once a worker has it or it is finished."""
        self.status(id)
        return self.store.cancel(id, now=self.clock())

    def purge(self, *, older_than: dt.timedelta) -> int:
        """Delete sent, failed and cancelled messages last changed longer ago than `older_than`."""
        if not isinstance(older_than, dt.timedelta) or older_than.total_seconds() < 0:
            raise ConfigurationError("older_than", "must be a timedelta of zero or more")
        return self.store.purge(before=self.clock() - older_than.total_seconds())

    # -- sending -----------------------------------------------------------------

    def worker(
        self,
        resolve_client: ResolveClient | None = None,
        *,
        concurrency: int | None = None,
        lease: float = DEFAULT_LEASE,
        backoff: Backoff | None = None,
        name: str | None = None,
        on_outcome: Callable[[Claimed, State], None] | None = None,
    ) -> Worker:
        """A worker that drains this outbox (see `Worker`); `resolve_client(tenant)` builds
        each tenant's `DeliveryClient` (default: the outbox's). `on_outcome(message, state)`
        is called (in the thread running the worker) after each outcome is recorded."""
        from ._worker import Worker

        resolve = resolve_client or self.resolve_client
        if resolve is None:
            raise ConfigurationError("resolve_client", "a worker needs resolve_client(tenant)")
        return Worker(
            self,
            resolve,
            concurrency=concurrency,
            lease=lease,
            backoff=backoff or Backoff(),
            name=name,
            on_outcome=on_outcome,
        )

    def deliver(
        self,
        id: str,
        resolve_client: ResolveClient | None = None,
        *,
        lease: float = DEFAULT_LEASE,
        backoff: Backoff | None = None,
    ) -> MessageStatus:
        """Send message `id` now if it is due and free (a task queue's job); idempotent.

        Claims the one message in a short transaction, sends, records. A second
        call while another holds the lease, or after the message is finished,
        sends nothing. When it is not due (backoff, pacing) nothing is sent and the
        returned status is `queued` with `not_before`: schedule the task again then.
        The client from `resolve_client` is not closed (cache your clients).
        """
        resolve = resolve_client or self.resolve_client
        if resolve is None:
            raise ConfigurationError("resolve_client", "deliver() needs resolve_client(tenant)")
        self.status(id)
        owner = f"deliver-{uuid.uuid4().hex[:12]}"
        claimed = self.store.claim_one(id, owner, lease=lease, now=self.clock())
        if claimed is not None:
            sender = Sender(backoff or Backoff(), self.clock)
            sender.send_one(self.store, owner, claimed, resolve, lease=lease)
        return self.status(id)

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection."""
        self.store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
