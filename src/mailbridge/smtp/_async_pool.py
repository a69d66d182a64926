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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

from .._results import Transaction
from ..composer import PreparedMessage
from ..errors import ConnectError, DeliveryError, PoolClosed
from ..settings import SmtpSettings
from ._async_connection import AsyncSmtpConnection
from ._pooling import Retries, Slot, SlotRules
from .pool import DEFAULT_MAX_PER_SERVER, DEFAULT_MESSAGES_IN_FLIGHT

__all__ = ["AsyncConnectionPool", "AsyncSmtpTransport", "AsyncTransport"]


class AsyncConnectionPool(SlotRules[AsyncSmtpConnection]):
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
        super().__init__(
            max_per_server=max_per_server,
            messages_in_flight=messages_in_flight,
            max_messages_per_connection=max_messages_per_connection,
            health_check_after=health_check_after,
            idle_timeout=idle_timeout,
            max_idle_logins=max_idle_logins,
        )
        self._opener = opener
        self._changed = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()  # QUITs said in the background

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _reusable(self, connection: AsyncSmtpConnection) -> bool:
        verdict = self._reuse_verdict(connection)
        if verdict is not None:
            return verdict
        try:
            return (await connection.noop()).code == 250
        except DeliveryError:
            return False

    def _quit_later(self, connection: AsyncSmtpConnection) -> None:
        task = asyncio.create_task(connection.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _acquire(
        self, settings: SmtpSettings, opened_after: float | None
    ) -> tuple[Slot[AsyncSmtpConnection], AsyncSmtpConnection, bool]:
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            slot = self._slots.get(settings)
            if slot is None:
                self._quit_all_later(self._evict())  # a new login: forget the stale ones first
                slot = self._slots[settings] = Slot()
            how, connection = self._claim(slot, opened_after)
            if how == "wait":
                slot.waiters += 1
                try:
                    await self._changed.wait()
                finally:
                    slot.waiters -= 1
                continue
            if how == "shared":
                assert connection is not None
                return slot, connection, True
            if how == "retire":
                assert connection is not None
                self._quit_later(connection)
                continue
            reused = connection is not None
            try:
                if connection is None:
                    connection = await self._opener(settings)
                elif not await self._reusable(connection):
                    self._settle(slot, None)
                    self._notify()
                    self._quit_later(connection)
                    continue
            except BaseException:
                self._settle(slot, None)
                self._notify()
                if connection is not None:
                    connection.close()
                raise
            self._settle(slot, connection)
            self._notify()
            return slot, connection, reused

    def _quit_all_later(self, connections: list[AsyncSmtpConnection]) -> None:
        for connection in connections:
            self._quit_later(connection)

    def _release(self, slot: Slot[AsyncSmtpConnection], connection: AsyncSmtpConnection) -> None:
        fate = self._give_back(slot, connection)
        if fate == "quit":
            self._quit_later(connection)
        elif fate == "close":
            connection.close()
        if fate != "busy" and len(self._slots) > self.max_idle_logins:
            self._quit_all_later(self._evict())
        self._notify()

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
        self._quit_all_later(self._close_slots())
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
        retries = Retries()
        for _ in retries:
            async with self.pool.connection(self.settings, opened_after=retries.failed_at) as (
                connection,
                reused,
            ):
                attempt = connection.prepare_message(message)
                try:
                    return await connection.run(attempt)
                except ConnectError as exc:
                    if not retries.again(exc, data_started=attempt.data_started, reused=reused):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the pool's idle connections (only when this transport owns the pool)."""
        if self.owns_pool:
            await self.pool.aclose()
