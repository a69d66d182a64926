"""A thread-safe pool of SMTP connections, keyed by server and credentials."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import DeliveryError, PoolClosed
from ..settings import SmtpSettings
from ._pooling import Slot, SlotRules
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


class ConnectionPool(SlotRules[SmtpConnection]):
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
        super().__init__(
            max_per_server=max_per_server,
            messages_in_flight=messages_in_flight,
            max_messages_per_connection=max_messages_per_connection,
            health_check_after=health_check_after,
            idle_timeout=idle_timeout,
            max_idle_logins=max_idle_logins,
        )
        self._opener = opener
        self._changed = threading.Condition()

    def _reusable(self, connection: SmtpConnection) -> bool:
        verdict = self._reuse_verdict(connection)
        if verdict is not None:
            return verdict
        try:
            return connection.noop().code == 250
        except DeliveryError:
            return False

    def _acquire(
        self, settings: SmtpSettings, opened_after: float | None
    ) -> tuple[Slot[SmtpConnection], SmtpConnection, bool]:
        while True:
            with self._changed:
                if self._closed:
                    raise PoolClosed("the connection pool is closed")
                doomed = self._evict()  # forget the logins gone stale meanwhile
                slot = self._slots.get(settings)
                if slot is None:
                    slot = self._slots[settings] = Slot()
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

    def _settle_opening(
        self, slot: Slot[SmtpConnection], connection: SmtpConnection | None
    ) -> None:
        """A connection opened or checked is now in use (or, None, gone); waiters re-check."""
        with self._changed:
            self._settle(slot, connection)
            self._changed.notify_all()  # it may take pipelined messages, or room was freed

    def _release(self, slot: Slot[SmtpConnection], connection: SmtpConnection) -> None:
        with self._changed:
            fate = self._give_back(slot, connection)
            if fate == "busy":
                self._changed.notify_all()
                return
            doomed = self._evict()
            self._changed.notify_all()
        for old in doomed:
            old.quit()
        if fate == "quit":
            connection.quit()
        elif fate == "close":
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
            idle = self._close_slots()
            self._changed.notify_all()
        for connection in idle:
            connection.quit()
