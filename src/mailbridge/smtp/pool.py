"""A thread-safe pool of SMTP connections, keyed by server and credentials."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import ConfigurationError, DeliveryError, PoolClosed
from ..settings import SmtpSettings
from .connection import SmtpConnection

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_PER_SERVER",
    "DEFAULT_MESSAGES_IN_FLIGHT",
    "ConnectionPool",
]

DEFAULT_MAX_PER_SERVER = 4
DEFAULT_MESSAGES_IN_FLIGHT = 3
# Threads that keep a default pool's connections full: `send_many`'s default.
DEFAULT_CONCURRENCY = DEFAULT_MAX_PER_SERVER * DEFAULT_MESSAGES_IN_FLIGHT


class _Slot:
    """The connections of one server + login: idle ones, busy ones and their users."""

    def __init__(self) -> None:
        self.idle: list[SmtpConnection] = []
        self.users: dict[SmtpConnection, int] = {}  # busy connections: threads using each
        self.opening = 0  # connections being opened or health-checked: not shareable yet
        self.waiters = 0  # threads waiting for room
        self.last_used = time.monotonic()

    @property
    def count(self) -> int:
        return len(self.idle) + len(self.users) + self.opening

    @property
    def unused(self) -> bool:
        """No thread uses, opens or waits for a connection of this slot."""
        return not (self.users or self.opening or self.waiters)


class ConnectionPool:
    """Keeps SMTP connections open between messages, at most `max_per_server` per server.

    Connections are keyed by the `SmtpSettings` (server and login), so clients
    for the same account share them when they share the pool. When every
    connection a server may have is busy, up to `messages_in_flight` threads
    share one that offers PIPELINING, their messages pipelined one after
    another (1 turns this off). A connection idle for longer than
    `health_check_after` seconds is checked with NOOP before reuse, one idle
    longer than `idle_timeout` is closed, and one that has carried
    `max_messages_per_connection` messages is replaced (providers limit both).
    A server + login nobody used for `idle_timeout` seconds is forgotten (its
    idle connections closed) the next time the pool hands out or takes back a
    connection, and of those not in use only the `max_idle_logins` most recent
    are kept, so a pool shared by many tenants does not grow with every tenant
    or password.
    Thread-safe; `close()` says QUIT on every idle connection.
    """

    def __init__(
        self,
        *,
        max_per_server: int = DEFAULT_MAX_PER_SERVER,
        messages_in_flight: int = DEFAULT_MESSAGES_IN_FLIGHT,
        max_messages_per_connection: int = 100,
        health_check_after: float = 10.0,
        idle_timeout: float = 120.0,
        max_idle_logins: int = 64,
        opener: Callable[[SmtpSettings], SmtpConnection] = SmtpConnection.open,
    ) -> None:
        if max_per_server < 1:
            raise ConfigurationError("max_per_server", "must be at least 1")
        if messages_in_flight < 1:
            raise ConfigurationError("messages_in_flight", "must be at least 1")
        if max_idle_logins < 0:
            raise ConfigurationError("max_idle_logins", "must not be negative")
        self.max_per_server = max_per_server
        self.messages_in_flight = messages_in_flight
        self.max_messages_per_connection = max_messages_per_connection
        self.health_check_after = health_check_after
        self.idle_timeout = idle_timeout
        self.max_idle_logins = max_idle_logins
        self._opener = opener
        self._slots: dict[SmtpSettings, _Slot] = {}
        self._changed = threading.Condition()
        self._closed = False

    def _reusable(self, connection: SmtpConnection) -> bool:
        idle = time.monotonic() - connection.last_used
        if not connection.is_open or idle > self.idle_timeout:
            return False
        if connection.messages_sent >= self.max_messages_per_connection:
            return False
        if idle > self.health_check_after:
            try:
                return connection.noop().code == 250
            except DeliveryError:
                return False
        return True

    def _shareable(self, connection: SmtpConnection, users: int) -> bool:
        return (
            users < self.messages_in_flight
            and connection.is_open
            and connection.pipelining
            and connection.messages_sent + users < self.max_messages_per_connection
        )

    def _claim(self, slot: _Slot, opened_after: float | None) -> tuple[str, SmtpConnection | None]:
        """Under the lock: an idle connection, room for a new one, or a busy one to share.

        With `opened_after`, only connections opened since then qualify; an older
        idle one is closed if that makes room.
        """

        def recent(connection: SmtpConnection) -> bool:
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

    def _acquire(
        self, settings: SmtpSettings, opened_after: float | None
    ) -> tuple[_Slot, SmtpConnection, bool]:
        while True:
            with self._changed:
                if self._closed:
                    raise PoolClosed("the connection pool is closed")
                doomed = self._evict()  # forget the logins gone stale meanwhile
                slot = self._slots.get(settings)
                if slot is None:
                    slot = self._slots[settings] = _Slot()
                how, connection = self._claim(slot, opened_after)
                if how == "wait":
                    slot.waiters += 1
                    try:
                        self._changed.wait()
                    finally:
                        slot.waiters -= 1
            for old in doomed:
                old.quit()
            if how == "wait":
                continue
            if how == "retire":
                assert connection is not None
                connection.quit()
                continue
            if how == "shared":
                assert connection is not None
                return slot, connection, True
            if how == "idle":
                assert connection is not None
                try:
                    usable = self._reusable(connection)
                except BaseException:
                    self._settle_opening(slot, None)
                    connection.close()
                    raise
                self._settle_opening(slot, connection if usable else None)
                if usable:
                    return slot, connection, True
                connection.quit()
                continue
            try:
                connection = self._opener(settings)
            except BaseException:
                self._settle_opening(slot, None)
                raise
            connection.shareable = self.messages_in_flight > 1
            self._settle_opening(slot, connection)
            return slot, connection, False

    def _evict(self) -> list[SmtpConnection]:
        """Under the lock: forget logins unused for `idle_timeout`, and the oldest unused
        ones beyond `max_idle_logins`; returns their idle connections, to be closed."""
        now = time.monotonic()
        unused = sorted(
            ((key, slot) for key, slot in self._slots.items() if slot.unused),
            key=lambda item: item[1].last_used,
        )
        excess = len(unused) - self.max_idle_logins
        doomed: list[SmtpConnection] = []
        for position, (key, slot) in enumerate(unused):
            stale = now - slot.last_used > self.idle_timeout or not slot.idle
            if stale or position < excess:
                doomed.extend(slot.idle)
                del self._slots[key]
        return doomed

    def _settle_opening(self, slot: _Slot, connection: SmtpConnection | None) -> None:
        """A connection opened or checked is now in use (or, None, gone); waiters re-check."""
        with self._changed:
            slot.opening -= 1
            if connection is not None:
                slot.users[connection] = 1
            self._changed.notify_all()  # it may take pipelined messages, or room was freed

    def _release(self, slot: _Slot, connection: SmtpConnection) -> None:
        with self._changed:
            slot.last_used = time.monotonic()
            slot.users[connection] -= 1
            if slot.users[connection]:
                self._changed.notify_all()
                return
            del slot.users[connection]
            # A message left on the wire by an interrupted thread: the replies still
            # due would be read as the next message's, so the connection ends.
            settled = connection.settled
            keep = (
                settled
                and not self._closed
                and connection.is_open
                and connection.messages_sent < self.max_messages_per_connection
            )
            if keep:
                slot.idle.append(connection)
            doomed = self._evict()
            self._changed.notify_all()
        for old in doomed:
            old.quit()
        if keep:
            return
        if settled:
            connection.quit()
        else:
            connection.close()

    @property
    def login_count(self) -> int:
        """How many server + login combinations the pool currently keeps track of."""
        with self._changed:
            return len(self._slots)

    @contextmanager
    def connection(
        self, settings: SmtpSettings, *, opened_after: float | None = None
    ) -> Iterator[tuple[SmtpConnection, bool]]:
        """A connection for `settings` and whether it was used before; back to the pool after.

        Waits while every connection this server may have is busy and none can
        take one more pipelined message. `opened_after` (a `time.monotonic()`
        value) asks for a connection opened since then: after a failure, older
        ones may have reached the same limit as the one that failed.
        """
        slot, connection, reused = self._acquire(settings, opened_after)
        try:
            yield connection, reused
        finally:
            self._release(slot, connection)

    def close(self) -> None:
        """Say QUIT on every idle connection; connections in use close when given back."""
        with self._changed:
            self._closed = True
            idle = [c for slot in self._slots.values() for c in slot.idle]
            for slot in self._slots.values():
                slot.idle.clear()
            self._changed.notify_all()
        for connection in idle:
            connection.quit()
