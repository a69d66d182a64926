"""Sending one claimed message and recording what happened; shared by workers and `deliver`.

Nothing here holds a transaction while talking SMTP: the row was claimed in one
short transaction, the message is sent, and the outcome is recorded in another
that only succeeds while the lease is still ours.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs
import imapclient.exceptions

from ..composer import PreparedMessage
from ..diagnosis import Category, Diagnosis
from ..diagnostics import client_unavailable
from ..errors import (
    ConfigurationError,
    DeliveryError,
    DeliveryOutcomeUnknown,
    MailbridgeError,
    PoolClosed,
)
from ..imap import SentArchiver
from ..reply import SmtpReply
from ._status import error_json, result_json
from ._store import Claimed, Outcome, State, Store

if TYPE_CHECKING:
    from .._client import DeliveryClient

__all__ = ["Backoff", "Leases", "Sender"]

log = logging.getLogger("mailbridge.outbox")
ResolveClient = Callable[[str], "DeliveryClient"]
_OK = SmtpReply(250, "2.0.0", "OK")  # the archive copy's SendResult needs a reply


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise ConfigurationError(attribute.name, "must be a positive number of seconds")


@attrs.frozen
class Backoff:
    """Waits between attempts after a temporary failure: exponential, with jitter.

    Attempt n waits `first * factor**(n-1)` seconds, at most `maximum`, of which
    a random part up to `jitter` (a fraction) is taken off so that many messages
    failing together do not return together.
    """

    first: float = attrs.field(default=30.0, validator=_positive)
    factor: float = attrs.field(default=2.0, validator=_positive)
    maximum: float = attrs.field(default=3600.0, validator=_positive)
    jitter: float = 0.5

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        base = min(self.maximum, self.first * self.factor ** max(0, attempts - 1))
        return base * (1.0 - random.random() * min(max(self.jitter, 0.0), 1.0))  # noqa: S311


def _short(error: BaseException) -> str:
    reply = getattr(error, "reply", None)
    text = str(reply) if reply is not None else str(error)
    return text.splitlines()[0][:200] if text else type(error).__name__


class Leases:
    """The leases one owner holds, as far as it knows: until when (by its clock) each is its own.

    A sender asks `held(id)` just before it transmits: a process that was paused
    (SIGSTOP, a VM frozen, a long GC) past its lease may have lost the message to
    another worker, which settled or sent it meanwhile; it must not send it again.
    Only a successful `renew` extends what `held` believes.
    """

    def __init__(self, store: Store, owner: str, lease: float, clock: Callable[[], float]) -> None:
        self.store, self.owner, self.lease, self.clock = store, owner, lease, clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, claimed: Claimed) -> None:
        with self._lock:
            self._until[claimed.id] = claimed.lease_expires

    def discard(self, id: str) -> None:
        with self._lock:
            self._until.pop(id, None)

    def held(self, id: str) -> bool:
        with self._lock:
            until = self._until.get(id)
        return until is not None and self.clock() < until

    def renew(self, ids: Sequence[str]) -> None:
        """Extend the leases of `ids`; one lost (taken over) is not extended."""
        if not ids:
            return
        now = self.clock()
        until = now + self.lease
        if self.store.renew(ids, self.owner, until=until, now=now) == len(ids):
            renewed = list(ids)
        else:  # some were taken over: find which are still ours
            renewed = [id for id in ids if self.store.renew([id], self.owner, until=until, now=now)]
        with self._lock:
            for id in renewed:
                if id in self._until:
                    self._until[id] = until

    @contextmanager
    def heartbeat(self, ids: Sequence[str]) -> Iterator[None]:
        """Renew `ids` every third of a lease in a thread while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease / 3):
                try:
                    self.renew(ids)
                except Exception:  # the store failed: the lease runs out, held() says so
                    log.warning("outbox: renewing the lease of %s failed", ", ".join(ids))

        thread = threading.Thread(target=beat, name="outbox-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


@attrs.define
class Sender:
    """Sends claimed messages and says what to record (`Outcome`); writes nothing itself.

    A worker records the outcomes of many messages in one transaction; `send_one`
    records one at once (Celery's `deliver`).
    """

    backoff: Backoff
    clock: Callable[[], float] = time.time

    def send_one(
        self, store: Store, owner: str, claimed: Claimed, resolve: ResolveClient, *, lease: float
    ) -> State:
        """`process` and record the outcome (if `owner` still holds the lease, which is
        renewed for `lease` seconds at a time meanwhile)."""
        leases = Leases(store, owner, lease, self.clock)
        leases.add(claimed)
        with leases.heartbeat([claimed.id]):
            outcome = self.process(claimed, resolve, leases.held)
        if not store.record([outcome], owner, now=self.clock())[0]:
            log.warning("outbox: %s was taken over before its outcome was recorded", claimed.id)
        return outcome.state

    def process(
        self, claimed: Claimed, resolve: ResolveClient, held: Callable[[str], bool] | None = None
    ) -> Outcome:
        """Send (or, for a recovered lease, settle) `claimed`; the outcome to record.

        `held(id)`, asked just before transmitting, says whether the lease is still
        ours; when it is not, nothing is sent. A sent message is archived (when the
        client archives) before its outcome is returned, so a crash before the
        record leaves a copy the Sent-folder search finds.
        """
        try:
            client = resolve(claimed.tenant)
        except Exception as exc:  # the application's resolver: park, never kill the worker
            log.warning("outbox: resolving tenant %r failed: %s", claimed.tenant, _resolver(exc))
            why = client_unavailable(_cause(exc))
            return Outcome(claimed.id, State.PARKED, error=error_json(exc, _resolver(exc), why))
        if client.closed:  # retrying would find it closed again: a person must look
            closed = ConfigurationError(
                "resolve_client",
                f"returned a closed DeliveryClient for tenant {claimed.tenant!r}; return an "
                "open one (a cached client must not be closed while workers use it)",
            )
            return Outcome(claimed.id, State.PARKED, error=error_json(closed))
        if claimed.recovering:
            return self._settle(claimed, client, None)
        prepared = claimed.prepared()
        if held is not None and not held(claimed.id):  # paused or stalled past the lease
            log.warning("outbox: %s not sent: its lease ran out before sending", claimed.id)
            reason = "the worker's lease ran out before sending: queued again"
            return Outcome(
                claimed.id, State.QUEUED, None, None, self.clock(), reason, count_attempt=False
            )
        try:
            transaction = client.transport.deliver(prepared)
        except DeliveryOutcomeUnknown as exc:
            return self._settle(claimed, client, exc)
        except DeliveryError as exc:
            if exc.temporary:
                return self._later(claimed, exc)
            return Outcome(claimed.id, State.FAILED, error=error_json(exc))
        except PoolClosed:  # closed between resolving and sending: nothing went out
            reason = "the tenant's client was closed before sending: queued again"
            return Outcome(
                claimed.id, State.QUEUED, None, None, self.clock(), reason, count_attempt=False
            )
        except MailbridgeError as exc:  # the tenant's set-up (SPF): a person acts
            return Outcome(claimed.id, State.PARKED, error=error_json(exc))
        except Exception as exc:
            log.error("outbox: sending %s failed unexpectedly: %s", claimed.id, type(exc).__name__)
            return Outcome(claimed.id, State.PARKED, error=error_json(exc))
        if client.archive_sent and client.imap is not None:
            self._archive(client, prepared)
        result = result_json(transaction.accepted, transaction.refused, transaction.reply)
        return Outcome(claimed.id, State.SENT, result=result)

    # -- outcomes ----------------------------------------------------------------

    def _later(self, claimed: Claimed, error: DeliveryError, why: str = "") -> Outcome:
        when = self.clock() + self.backoff.delay(claimed.attempts)
        if when > claimed.deadline:
            message = f"gave up after {claimed.attempts} attempts: {error}"
            return Outcome(claimed.id, State.FAILED, error=error_json(error, message))
        reason = (
            f"retrying at {time.strftime('%H:%M:%S', time.gmtime(when))}: "
            + (f"{why}: " if why else "")
            + _short(error)
        )
        return Outcome(claimed.id, State.QUEUED, None, error_json(error), when, reason)

    def _settle(
        self, claimed: Claimed, client: DeliveryClient, error: DeliveryOutcomeUnknown | None
    ) -> Outcome:
        """A message that may have been transmitted: never resent blindly.

        With IMAP, a copy in the Sent folder proves it went out; where the server
        files its own copy (Gmail, Microsoft 365), no copy proves it did not, so it
        is queued again. Otherwise it is `outcome_unknown` for the application.
        """
        why = (
            "the previous worker stopped while sending it"
            if error is None
            else "the connection was lost after the message was sent"
        )
        found = self._find_in_sent(client, claimed.message_id)
        if found:
            result = result_json((), {}, None, settled_by="sent_folder")
            return Outcome(claimed.id, State.SENT, result=result)
        if found is not None and not client.archive_sent:
            if error is not None:  # this attempt failed after all: back off, up to the deadline
                return self._later(claimed, error, "not in the Sent folder")
            reason = "not in the Sent folder after an interruption: sending again"
            return Outcome(
                claimed.id, State.QUEUED, None, None, self.clock(), reason, count_attempt=False
            )
        unknown = error or DeliveryOutcomeUnknown(
            why, diagnosis=_unknown_diagnosis(), temporary=False
        )
        message = f"outcome unknown: {why}"
        return Outcome(claimed.id, State.OUTCOME_UNKNOWN, error=error_json(unknown, message))

    @staticmethod
    def _find_in_sent(client: DeliveryClient, message_id: str) -> bool | None:
        """True/False when the Sent folder answered, None when it cannot be asked."""
        if client.imap is None:
            return None
        archiver = SentArchiver(client.imap)
        try:
            found = archiver.find([message_id])
        except (MailbridgeError, imapclient.exceptions.IMAPClientError, OSError) as exc:
            log.warning("outbox: the Sent folder search failed: %s", exc)
            return None
        finally:
            archiver.close()
        return None if found is None else message_id in found

    @staticmethod
    def _archive(client: DeliveryClient, prepared: PreparedMessage) -> None:
        from .._client import SendResult  # the client module loads only when sending

        try:
            result = SendResult(
                message_id=prepared.message_id,
                accepted=prepared.recipients,
                refused={},
                reply=_OK,
                envelope_sender=prepared.envelope_sender,
                size=len(prepared.data),
                message=prepared,
            )
            archived = client.archive(result)
            if not archived.archived:
                log.warning(
                    "outbox: %s not archived: %s", prepared.message_id, archived.archive_reason
                )
        except MailbridgeError as exc:
            log.warning("outbox: archiving %s failed: %s", prepared.message_id, exc)


def _cause(exc: BaseException) -> str:
    # The application's exception: its type only, its text might hold a secret.
    return str(exc) if isinstance(exc, MailbridgeError) else type(exc).__name__


def _resolver(exc: BaseException) -> str:
    return f"resolve_client failed for this tenant: {_cause(exc)}"


def _unknown_diagnosis() -> Diagnosis:
    return Diagnosis(
        Category.OUTCOME_UNKNOWN,
        "The worker sending this message stopped; it may have been delivered.",
        (
            "Check the Sent folder or with the recipient, then retry(id, force=True) if it "
            "did not arrive.",
        ),
    )
