"""A thread-safe pool of SMTP connections, keyed by server and credentials."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import DeliveryError
from ..settings import SmtpSettings
from .connection import SmtpConnection

__all__ = ["ConnectionPool"]


class _Slot:
    """The connections of one server + login: idle ones, and a bound on how many exist."""

    def __init__(self, limit: int) -> None:
        self.idle: list[SmtpConnection] = []
        self.capacity = threading.BoundedSemaphore(limit)


class ConnectionPool:
    """Keeps SMTP connections open between messages, at most `max_per_server` per server.

    Connections are keyed by the `SmtpSettings` (server and login), so clients
    for the same account share them when they share the pool. A connection
    idle for longer than `health_check_after` seconds is checked with NOOP
    before reuse, one idle longer than `idle_timeout` is closed, and one that
    has carried `max_messages_per_connection` messages is replaced (providers
    limit both). Thread-safe; `close()` says QUIT on every idle connection.
    """

    def __init__(
        self,
        *,
        max_per_server: int = 4,
        max_messages_per_connection: int = 100,
        health_check_after: float = 10.0,
        idle_timeout: float = 120.0,
        opener: Callable[[SmtpSettings], SmtpConnection] = SmtpConnection.open,
    ) -> None:
        if max_per_server < 1:
            raise ValueError("max_per_server must be at least 1")
        self.max_per_server = max_per_server
        self.max_messages_per_connection = max_messages_per_connection
        self.health_check_after = health_check_after
        self.idle_timeout = idle_timeout
        self._opener = opener
        self._slots: dict[SmtpSettings, _Slot] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _slot(self, settings: SmtpSettings) -> _Slot:
        with self._lock:
            slot = self._slots.get(settings)
            if slot is None:
                slot = self._slots[settings] = _Slot(self.max_per_server)
            return slot

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

    def _take_idle(self, slot: _Slot) -> SmtpConnection | None:
        while True:
            with self._lock:
                if not slot.idle:
                    return None
                connection = slot.idle.pop()
            if self._reusable(connection):
                return connection
            connection.quit()

    @contextmanager
    def connection(self, settings: SmtpSettings) -> Iterator[tuple[SmtpConnection, bool]]:
        """A connection for `settings` and whether it was reused; back to the pool afterwards.

        Waits while `max_per_server` connections to this server are in use.
        """
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        slot = self._slot(settings)
        slot.capacity.acquire()
        try:
            connection = self._take_idle(slot)
            reused = connection is not None
            if connection is None:
                connection = self._opener(settings)
            try:
                yield connection, reused
            finally:
                self._give_back(slot, connection)
        finally:
            slot.capacity.release()

    def _give_back(self, slot: _Slot, connection: SmtpConnection) -> None:
        keep = (
            not self._closed
            and connection.is_open
            and connection.messages_sent < self.max_messages_per_connection
        )
        if keep:
            with self._lock:
                if not self._closed:  # close() may have drained the pool meanwhile
                    slot.idle.append(connection)
                    return
        connection.quit()

    def close(self) -> None:
        """Say QUIT on every idle connection; connections in use close when given back."""
        with self._lock:
            self._closed = True
            idle = [c for slot in self._slots.values() for c in slot.idle]
            for slot in self._slots.values():
                slot.idle.clear()
        for connection in idle:
            connection.quit()

    def reopen(self) -> None:
        """Allow use again after `close()`."""
        self._closed = False
