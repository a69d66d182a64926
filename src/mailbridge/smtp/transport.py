"""Transports: the one small interface between `DeliveryClient` and a mail server."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._results import Transaction
from ..composer import PreparedMessage
from ..errors import ConnectError
from ..settings import SmtpSettings
from ._pooling import MAX_CONNECTIONS_TRIED, Retries
from .pool import ConnectionPool

__all__ = ["MAX_CONNECTIONS_TRIED", "SmtpTransport", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """Delivers a prepared message and reports who accepted it.

    `deliver` returns a `Transaction` (accepted, refused, final reply) or raises
    a `DeliveryError`. Implementations must be safe to call from several threads.
    """

    def deliver(self, message: PreparedMessage) -> Transaction:
        """Deliver `message` to its envelope recipients."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class SmtpTransport:
    """Delivers through one SMTP server over pooled connections.

    Give several transports the same `ConnectionPool` to share connections
    (e.g. many tenants on one provider); by default each transport has its own
    pool of up to four connections. Threads sending through one transport at
    once pipeline their messages over the pooled connections.

    A message the server never took is sent again, on a connection opened
    after the failure, up to `MAX_CONNECTIONS_TRIED` connections in all: when the
    connection failed before any of its bytes went out (a stale reused one, or
    one another message broke), or when the server ended the session with 421
    before accepting it (a per-connection message limit). Nothing is retried
    once the server may have taken the message, so nothing is sent twice.
    """

    def __init__(self, settings: SmtpSettings, *, pool: ConnectionPool | None = None) -> None:
        self.settings = settings
        self.owns_pool = pool is None
        self.pool = pool or ConnectionPool()

    def deliver(self, message: PreparedMessage) -> Transaction:
        """Send `message`; see the class docstring for reuse and retry rules."""
        retries = Retries()
        for _ in retries:
            with self.pool.connection(self.settings, opened_after=retries.failed_at) as (
                connection,
                reused,
            ):
                attempt = connection.prepare_message(message)
                try:
                    return connection.run(attempt)
                except ConnectError as exc:
                    if not retries.again(exc, data_started=attempt.data_started, reused=reused):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the pool's idle connections (only when this transport owns the pool)."""
        if self.owns_pool:
            self.pool.close()
