"""Transports: the one small interface between `DeliveryClient` and a mail server."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

from ..composer import PreparedMessage
from ..errors import ConnectError, DeliveryError
from ..settings import SmtpSettings
from .connection import SmtpConnection, Transaction

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
        """Release connections; the transport may be used again afterwards."""
        ...


class SmtpTransport:
    """Delivers through one SMTP server, keeping one connection open between messages.

    A connection idle for longer than `idle_check_after` seconds is checked
    with NOOP before use; a stale connection found while sending the envelope
    is replaced once. Nothing is ever retried once message data went out, so
    a message is never sent twice. Thread-safe: messages go one at a time.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        idle_check_after: float = 10.0,
        max_messages_per_connection: int = 100,
    ) -> None:
        self.settings = settings
        self.idle_check_after = idle_check_after
        self.max_messages_per_connection = max_messages_per_connection
        self._lock = threading.Lock()
        self._connection: SmtpConnection | None = None

    def _acquire(self) -> tuple[SmtpConnection, bool]:
        connection = self._connection
        if connection is not None and (
            not connection.is_open or connection.messages_sent >= self.max_messages_per_connection
        ):
            connection.quit()
            connection = self._connection = None
        if (
            connection is not None
            and time.monotonic() - connection.last_used > self.idle_check_after
        ):
            try:
                alive = connection.noop().code == 250
            except DeliveryError:
                alive = False
            if not alive:
                connection.close()
                connection = self._connection = None
        if connection is not None:
            return connection, True
        self._connection = SmtpConnection.open(self.settings)
        return self._connection, False

    def deliver(self, message: PreparedMessage) -> Transaction:
        """Send `message`; see the class docstring for reuse and retry rules."""
        with self._lock:
            for attempt in (1, 2):
                connection, reused = self._acquire()
                try:
                    return connection.send(
                        message.envelope_sender,
                        message.recipients,
                        message.data,
                        smtputf8=message.smtputf8,
                    )
                except ConnectError:
                    connection.close()
                    self._connection = None
                    if attempt == 1 and reused and not connection.data_started:
                        continue  # the server dropped an idle connection: one fresh try
                    raise
                except DeliveryError:
                    raise  # the session is in a known state and stays usable
                except BaseException:
                    connection.close()
                    self._connection = None
                    raise
                finally:
                    if self._connection is not None and not self._connection.is_open:
                        self._connection = None
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Say QUIT and close the open connection, if any."""
        with self._lock:
            if self._connection is not None:
                self._connection.quit()
                self._connection = None
