"""An asyncio pool of SMTP connections and the transport that delivers through it.

The limits and rules are the sync `ConnectionPool`'s and `SmtpTransport`'s:
at most `max_per_server` connections per server + login, up to
`messages_in_flight` messages pipelined on one busy connection, NOOP before
reusing one idle longer than `health_check_after`, a new connection after
`max_messages_per_connection` messages, and a message the server never took
(a 421, a stale connection) sent again on a connection opened after the
failure. A pool belongs to the event loop that first uses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

from .. import diagnostics
from .._results import Transaction
from ..composer import PreparedMessage
from ..errors import ConfigurationError, ConnectError, DeliveryError, PoolClosed
from ..settings import SmtpSettings
from ._async_connection import AsyncSmtpConnection
from .pool import DEFAULT_MAX_PER_SERVER, DEFAULT_MESSAGES_IN_FLIGHT
from .transport import MAX_CONNECTIONS_TRIED, _never_taken

__all__ = ["AsyncConnectionPool", "AsyncSmtpTransport", "AsyncTransport"]


class _Slot:
    """The connections of one server + login."""

    def __init__(self) -> None:
        self.idle: list[AsyncSmtpConnection] = []
        self.users: dict[AsyncSmtpConnection, int] = {}  # busy connections: tasks using each
        self.opening = 0  # being opened or health-checked: not shareable yet
        self.waiters = 0
        self.last_used = time.monotonic()

    @property
    def count(self) -> int:
        return len(self.idle) + len(self.users) + self.opening

    @property
    def unused(self) -> bool:
        return not (self.users or self.opening or self.waiters)


class AsyncConnectionPool:
    """Keeps SMTP connections open between messages, for asyncio (see `ConnectionPool`)."""

    def __init__(
        self,
        *,
        max_per_server: int = DEFAULT_MAX_PER_SERVER,
        messages_in_flight: int = DEFAULT_MESSAGES_IN_FLIGHT,
        max_messages_per_connection: int = 100,
        health_check_after: float = 10.0,
        idle_timeout: float = 120.0,
        max_idle_logins: int = 64,
        opener: Callable[[SmtpSettings], Awaitable[AsyncSmtpConnection]] = (
            AsyncSmtpConnection.open
        ),
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
        self._changed = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()  # QUITs said in the background
        self._closed = False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _reusable(self, connection: AsyncSmtpConnection) -> bool:
        idle = time.monotonic() - connection.last_used
        if not connection.is_open or idle > self.idle_timeout:
            return False
        if connection.messages_sent >= self.max_messages_per_connection:
            return False
        if idle > self.health_check_after:
            try:
                return (await connection.noop()).code == 250
            except DeliveryError:
                return False
        return True

    def _shareable(self, connection: AsyncSmtpConnection, users: int) -> bool:
        return (
            users < self.messages_in_flight
            and connection.is_open
            and connection.pipelining
            and connection.messages_sent + users < self.max_messages_per_connection
        )

    def _quit_later(self, connection: AsyncSmtpConnection) -> None:
        task = asyncio.create_task(connection.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _acquire(
        self, settings: SmtpSettings, opened_after: float | None
    ) -> tuple[_Slot, AsyncSmtpConnection, bool]:
        def recent(connection: AsyncSmtpConnection) -> bool:
            return opened_after is None or connection.opened_at >= opened_after

        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            slot = self._slots.get(settings)
            if slot is None:
                self._evict()  # a new login: forget the stale ones first
                slot = self._slots[settings] = _Slot()
            idle = [c for c in slot.idle if recent(c)]
            if idle:
                connection = idle[-1]
                slot.idle.remove(connection)
                slot.opening += 1  # until its health check passes, nobody may share it
                try:
                    usable = await self._reusable(connection)
                except BaseException:
                    connection.close()
                    raise
                finally:
                    slot.opening -= 1
                    self._notify()
                if usable:
                    slot.users[connection] = 1
                    return slot, connection, True
                self._quit_later(connection)
                continue
            if slot.count >= self.max_per_server and slot.idle:
                self._quit_later(slot.idle.pop(0))  # the oldest idle one makes room
                continue
            if slot.count < self.max_per_server:
                slot.opening += 1
                try:
                    connection = await self._opener(settings)
                finally:
                    slot.opening -= 1
                    self._notify()
                slot.users[connection] = 1
                return slot, connection, False
            shareable = [c for c, n in slot.users.items() if recent(c) and self._shareable(c, n)]
            if shareable:
                connection = min(shareable, key=lambda c: slot.users[c])
                slot.users[connection] += 1
                return slot, connection, True
            slot.waiters += 1
            try:
                await self._changed.wait()
            finally:
                slot.waiters -= 1

    def _evict(self) -> None:
        """Forget logins unused for `idle_timeout`, and the oldest unused ones beyond
        `max_idle_logins`; their idle connections say QUIT in the background."""
        now = time.monotonic()
        unused = sorted(
            ((key, slot) for key, slot in self._slots.items() if slot.unused),
            key=lambda item: item[1].last_used,
        )
        excess = len(unused) - self.max_idle_logins
        for position, (key, slot) in enumerate(unused):
            if now - slot.last_used > self.idle_timeout or not slot.idle or position < excess:
                for connection in slot.idle:
                    self._quit_later(connection)
                del self._slots[key]

    def _release(self, slot: _Slot, connection: AsyncSmtpConnection) -> None:
        slot.last_used = time.monotonic()
        slot.users[connection] -= 1
        if slot.users[connection]:
            self._notify()
            return
        del slot.users[connection]
        # A message still on the wire (its task was cancelled): it finishes on its
        # own, but the connection is not handed out again.
        settled = connection.settled
        keep = (
            settled
            and not self._closed
            and connection.is_open
            and connection.messages_sent < self.max_messages_per_connection
        )
        if keep:
            slot.idle.append(connection)
        elif settled:
            self._quit_later(connection)
        else:
            connection.close()
        if len(self._slots) > self.max_idle_logins:
            self._evict()
        self._notify()

    @property
    def login_count(self) -> int:
        """How many server + login combinations the pool currently keeps track of."""
        return len(self._slots)

    @asynccontextmanager
    async def connection(
        self, settings: SmtpSettings, *, opened_after: float | None = None
    ) -> AsyncIterator[tuple[AsyncSmtpConnection, bool]]:
        """A connection for `settings` and whether it was used before; back to the pool after."""
        slot, connection, reused = await self._acquire(settings, opened_after)
        try:
            yield connection, reused
        finally:
            self._release(slot, connection)

    async def aclose(self) -> None:
        """Say QUIT on every idle connection; connections in use close when given back."""
        self._closed = True
        for slot in self._slots.values():
            for connection in slot.idle:
                self._quit_later(connection)
            slot.idle.clear()
        self._notify()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


@runtime_checkable
class AsyncTransport(Protocol):
    """Delivers a prepared message and reports who accepted it (the asyncio `Transport`)."""

    async def deliver(self, message: PreparedMessage) -> Transaction:
        """Deliver `message` to its envelope recipients."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class AsyncSmtpTransport:
    """Delivers through one SMTP server over pooled asyncio connections (see `SmtpTransport`)."""

    def __init__(self, settings: SmtpSettings, *, pool: AsyncConnectionPool | None = None) -> None:
        self.settings = settings
        self.owns_pool = pool is None
        self.pool = pool or AsyncConnectionPool()

    async def deliver(self, message: PreparedMessage) -> Transaction:
        """Send `message`; reuse and retry rules as for `SmtpTransport`."""
        failed_at: float | None = None
        for tried in range(1, MAX_CONNECTIONS_TRIED + 1):
            async with self.pool.connection(self.settings, opened_after=failed_at) as (
                connection,
                reused,
            ):
                attempt = connection.prepare(
                    message.envelope_sender,
                    message.recipients,
                    message.data,
                    smtputf8=message.smtputf8,
                )
                try:
                    return await connection.run(attempt)
                except ConnectError as exc:
                    if attempt.data_started or not _never_taken(exc, reused):
                        raise
                    if tried == MAX_CONNECTIONS_TRIED:
                        raise diagnostics.kept_refusing(exc, tried) from exc
                    failed_at = time.monotonic()
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the pool's idle connections (only when this transport owns the pool)."""
        if self.owns_pool:
            await self.pool.aclose()
