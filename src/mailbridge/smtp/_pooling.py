"""The pools' and transports' decisions, without I/O, locks or waiting.

`SlotRules` holds a pool's limits and the bookkeeping of its connections per
server + login (`Slot`): whether an idle one may be reused, which busy one can
take one more pipelined message, when to open one, wait or retire one, which
logins to forget, and what becomes of a connection given back. `Retries`
decides whether a message the server never took goes again on a fresh
connection. The sync `ConnectionPool`/`SmtpTransport` and the asyncio
`AsyncConnectionPool`/`AsyncSmtpTransport` keep only their locking, waiting
and I/O around these.
"""

from __future__ import annotations

import math
import time
from typing import Generic, Literal, Protocol, TypeVar

from .. import diagnostics
from ..diagnosis import Category
from ..errors import ConfigurationError, ConnectError, DeliveryTimeout
from ..settings import SmtpSettings

__all__ = ["MAX_CONNECTIONS_TRIED", "Claim", "Pooled", "Retries", "Slot", "SlotRules"]

MAX_CONNECTIONS_TRIED = 4  # per message: the first one, then fresh ones after a 421 or a loss

# What to do for a connection asked for: "idle" (reuse it, after a health check
# if due), "shared" (pipeline one more message on it), "new" (open one),
# "retire" (close this idle one to make room, then ask again), "wait".
Claim = Literal["idle", "shared", "new", "retire", "wait"]
# What becomes of a connection given back: still "busy" (others use it), "keep"
# (idle in the pool), "quit" (say QUIT) or "close" (drop it: replies still due).
GiveBack = Literal["busy", "keep", "quit", "close"]


class Pooled(Protocol):
    """What the rules read of a connection (sync or asyncio)."""

    @property
    def is_open(self) -> bool: ...
    @property
    def pipelining(self) -> bool: ...
    @property
    def messages_sent(self) -> int: ...
    @property
    def settled(self) -> bool: ...
    @property
    def opened_at(self) -> float: ...
    @property
    def last_used(self) -> float: ...


C = TypeVar("C", bound=Pooled)


class Slot(Generic[C]):
    """The connections of one server + login: idle ones, busy ones and their users."""

    def __init__(self) -> None:
        self.idle: list[C] = []
        self.users: dict[C, int] = {}  # busy connections: threads or tasks using each
        self.opening = 0  # connections being opened or health-checked: not shareable yet
        self.waiters = 0  # threads or tasks waiting for room
        self.last_used = time.monotonic()

    @property
    def count(self) -> int:
        return len(self.idle) + len(self.users) + self.opening

    @property
    def unused(self) -> bool:
        """Nobody uses, opens or waits for a connection of this slot."""
        return not (self.users or self.opening or self.waiters)


class SlotRules(Generic[C]):
    """A pool's limits and its slots, with the decisions made on them (no I/O).

    The caller holds whatever lock it needs around each method.
    """

    def __init__(
        self,
        *,
        max_per_server: int,
        messages_in_flight: int,
        max_messages_per_connection: int,
        health_check_after: float,
        idle_timeout: float,
        max_idle_logins: int,
    ) -> None:
        if max_per_server < 1:
            raise ConfigurationError("max_per_server", "must be at least 1")
        if messages_in_flight < 1:
            raise ConfigurationError("messages_in_flight", "must be at least 1")
        if max_idle_logins < 0:
            raise ConfigurationError("max_idle_logins", "must not be negative")
        if max_messages_per_connection < 1:
            raise ConfigurationError("max_messages_per_connection", "must be at least 1")
        for name, seconds in (
            ("health_check_after", health_check_after),
            ("idle_timeout", idle_timeout),
        ):
            if not math.isfinite(seconds) or seconds < 0:
                raise ConfigurationError(name, "must be a finite number of seconds, 0 or more")
        self.max_per_server = max_per_server
        self.messages_in_flight = messages_in_flight
        self.max_messages_per_connection = max_messages_per_connection
        self.health_check_after = health_check_after
        self.idle_timeout = idle_timeout
        self.max_idle_logins = max_idle_logins
        self._slots: dict[SmtpSettings, Slot[C]] = {}
        self._closed = False

    @property
    def login_count(self) -> int:
        """How many server + login combinations the pool currently keeps track of."""
        return len(self._slots)

    def _reuse_verdict(self, connection: C) -> bool | None:
        """Whether an idle connection may be reused; None: only if NOOP says 250."""
        idle = time.monotonic() - connection.last_used
        if not connection.is_open or idle > self.idle_timeout:
            return False
        if connection.messages_sent >= self.max_messages_per_connection:
            return False
        if idle > self.health_check_after:
            return None
        return True

    def _shareable(self, connection: C, users: int) -> bool:
        return (
            users < self.messages_in_flight
            and connection.is_open
            and connection.pipelining
            and connection.messages_sent + users < self.max_messages_per_connection
        )

    def _claim(self, slot: Slot[C], opened_after: float | None) -> tuple[Claim, C | None]:
        """An idle connection, room for a new one, or a busy one to share.

        With `opened_after`, only connections opened since then qualify; an older
        idle one is retired if that makes room. "idle" and "new" count as
        opening until `_settle_opening`.
        """

        def recent(connection: C) -> bool:
            return opened_after is None or connection.opened_at >= opened_after

        idle = [c for c in slot.idle if recent(c)]
        if idle:
            connection = idle[-1]
            slot.idle.remove(connection)
            slot.opening += 1  # until its health check passes, nobody may share it
            return "idle", connection
        if slot.count >= self.max_per_server and slot.idle:
            return "retire", slot.idle.pop(0)  # the oldest idle one makes room
        if slot.count < self.max_per_server:
            slot.opening += 1
            return "new", None
        shareable = [c for c, n in slot.users.items() if recent(c) and self._shareable(c, n)]
        if shareable:
            connection = min(shareable, key=lambda c: slot.users[c])
            slot.users[connection] += 1
            return "shared", connection
        return "wait", None

    def _settle(self, slot: Slot[C], connection: C | None) -> None:
        """A connection opened or checked is now in use (or, None, gone)."""
        slot.opening -= 1
        if connection is not None:
            slot.users[connection] = 1

    def _evict(self) -> list[C]:
        """Forget logins unused for `idle_timeout`, and the oldest unused ones beyond
        `max_idle_logins`; returns their idle connections, to be closed."""
        now = time.monotonic()
        unused = sorted(
            ((key, slot) for key, slot in self._slots.items() if slot.unused),
            key=lambda item: item[1].last_used,
        )
        excess = len(unused) - self.max_idle_logins
        doomed: list[C] = []
        for position, (key, slot) in enumerate(unused):
            stale = now - slot.last_used > self.idle_timeout or not slot.idle
            if stale or position < excess:
                doomed.extend(slot.idle)
                del self._slots[key]
        return doomed

    def _give_back(self, slot: Slot[C], connection: C) -> GiveBack:
        """One user is done with `connection`: what becomes of it."""
        slot.last_used = time.monotonic()
        slot.users[connection] -= 1
        if slot.users[connection]:
            return "busy"
        del slot.users[connection]
        # A message left on the wire by an interrupted thread or a cancelled task:
        # the replies still due would be read as the next message's, so the
        # connection ends.
        if not connection.settled:
            return "close"
        keep = (
            not self._closed
            and connection.is_open
            and connection.messages_sent < self.max_messages_per_connection
        )
        if not keep:
            return "quit"
        slot.idle.append(connection)
        return "keep"

    def _close_slots(self) -> list[C]:
        """The pool closes: returns every idle connection, to say QUIT on."""
        self._closed = True
        idle = [c for slot in self._slots.values() for c in slot.idle]
        for slot in self._slots.values():
            slot.idle.clear()
        return idle


class Retries:
    """Whether a message the server never took goes again, on a connection opened
    after the failure (`failed_at`), up to `MAX_CONNECTIONS_TRIED` connections."""

    def __init__(self) -> None:
        self.failed_at: float | None = None
        self.tried = 0

    def __iter__(self) -> Retries:
        return self

    def __next__(self) -> Retries:
        if self.tried == MAX_CONNECTIONS_TRIED:  # pragma: no cover - again() raised first
            raise StopIteration
        self.tried += 1
        return self

    def again(self, exc: ConnectError, *, data_started: bool, reused: bool) -> bool:
        """After `exc`: True to try a fresh connection, False to re-raise `exc`; raises
        the diagnosis of a server that kept refusing when the tries are spent."""
        if data_started or not _never_taken(exc, reused):
            return False
        if self.tried == MAX_CONNECTIONS_TRIED:
            raise diagnostics.kept_refusing(exc, self.tried) from exc
        self.failed_at = time.monotonic()
        return True


def _never_taken(exc: ConnectError, reused: bool) -> bool:
    """Whether the failure leaves the server without the message, so it may go again.

    A 421 ends the session without taking the message; a connection lost before
    any message bytes went out, when it was reused (stale) or broken by another
    message, took nothing. A time-out on a new connection is not retried: the
    server is slow, and waiting again would double the wait.
    """
    if exc.reply is not None and exc.reply.closes_connection:
        return True
    if isinstance(exc, DeliveryTimeout):
        return reused
    return reused or exc.diagnosis.category == Category.CONNECTION_LOST
