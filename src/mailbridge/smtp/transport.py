"""Transports: the one small interface between `DeliveryClient` and a mail server."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..composer import PreparedMessage
from ..diagnosis import Category
from ..errors import ConnectError, MailbridgeError
from ..settings import SmtpSettings
from .connection import Transaction
from .pool import ConnectionPool

__all__ = ["SmtpTransport", "Transport"]


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
    once pipeline their messages over the pooled connections. A message whose
    reused connection failed before any of its bytes went out is sent once
    more on another; nothing is ever retried once the server may have taken
    the message, so a message is never sent twice.
    """

    def __init__(self, settings: SmtpSettings, *, pool: ConnectionPool | None = None) -> None:
        self.settings = settings
        self.owns_pool = pool is None
        self.pool = pool or ConnectionPool()

    def deliver(self, message: PreparedMessage) -> Transaction:
        """Send `message`; see the class docstring for reuse and retry rules."""
        for round_ in (1, 2):
            try:
                with self.pool.connection(self.settings) as (connection, reused):
                    attempt = connection.prepare(
                        message.envelope_sender,
                        message.recipients,
                        message.data,
                        smtputf8=message.smtputf8,
                    )
                    try:
                        return connection.run(attempt)
                    except ConnectError as exc:
                        # Nothing of the message went out: once more on another connection
                        # when this one was stale (reused) or failed by another message.
                        lost = exc.diagnosis.category == Category.CONNECTION_LOST
                        if round_ == 1 and not attempt.data_started and (reused or lost):
                            continue
                        raise
            except RuntimeError as exc:
                raise MailbridgeError(str(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the pool's idle connections (only when this transport owns the pool)."""
        if self.owns_pool:
            self.pool.close()
