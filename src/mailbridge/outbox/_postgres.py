"""The PostgreSQL dialect: psycopg 3, `FOR UPDATE SKIP LOCKED` claims, LISTEN/NOTIFY wake-ups.

Any number of worker processes on any number of machines share one outbox: a claim locks
the rows it takes and skips rows another claim holds (no waiting, no double claim), the
tenants' pacing rows are locked in tenant order (counters hold across workers), and every
transaction is short and committed before a byte of SMTP is sent.

An enqueue's transaction sends `NOTIFY mailbridge_outbox`, which PostgreSQL delivers when it
commits; idle workers `LISTEN` on a second connection, opened on their first `wait()`, and
wake at once instead of polling.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg

from ..errors import ConfigurationError

__all__ = ["CHANNEL", "PostgresDialect"]

CHANNEL = "mailbridge_outbox"
CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise (connect_timeout=)
SCHEMA_LOCK = 0x6D62_6F78  # advisory lock key ("mbox") held while the schema is read or migrated
RECONNECT_PAUSE = 1.0  # seconds an idle worker waits before listening again after an error


class PostgresDialect:
    """PostgreSQL through psycopg 3; the store's one connection plus a listener for `wait()`."""

    name = "postgresql"
    blob = "BYTEA"
    real = "DOUBLE PRECISION"
    claim_lock = "FOR UPDATE SKIP LOCKED"
    row_lock = "FOR UPDATE"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ConfigurationError("url", "a PostgreSQL outbox URL looks like postgresql://…")
        self._url = url
        self._connection: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        # close() wakes this instance's own waiter on a channel only it listens on.
        self._private_channel = f"{CHANNEL}_{uuid.uuid4().hex}"
        self._closed = threading.Event()
        self._listener_lock = threading.Lock()

    def __repr__(self) -> str:  # the URL may hold a password: never show it
        return "<PostgresDialect>"

    def connect(self) -> Any:
        self._connection = self._open()
        return self._connection

    def _open(self) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {"application_name": "mailbridge-outbox"}
        if "connect_timeout" not in self._url:
            options["connect_timeout"] = CONNECT_TIMEOUT
        try:
            return psycopg.connect(self._url, autocommit=True, **options)
        except psycopg.Error as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigurationError(
                "url", f"cannot open the PostgreSQL outbox: {problem}"
            ) from None

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def begin(self, cursor: Any, *, write: bool) -> None:
        # Explicit, whatever default_transaction_isolation says: SKIP LOCKED claims rely on
        # READ COMMITTED re-reading a locked row's newest version.
        cursor.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def lock_schema(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def notify(self, cursor: Any) -> None:
        cursor.execute(f"NOTIFY {CHANNEL}")

    def wait(self, timeout: float) -> None:
        """Up to `timeout` seconds, until an enqueue anywhere commits (or close() is called)."""
        if self._closed.is_set() or timeout <= 0:
            return
        with self._listener_lock:
            if self._listener is None:
                try:
                    self._listener = self._open()
                    self._listener.execute(f"LISTEN {CHANNEL}")
                    self._listener.execute(f"LISTEN {self._private_channel}")
                except (psycopg.Error, ConfigurationError):
                    self._drop_listener()
                    self._closed.wait(min(timeout, RECONNECT_PAUSE))
                # A notification may have been sent before LISTEN: let the caller look again.
                return
            try:
                for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                    break
            except psycopg.Error:  # the server went away: listen again on the next wait()
                self._drop_listener()
                self._closed.wait(min(timeout, RECONNECT_PAUSE))

    def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None

    def close(self) -> None:
        self._closed.set()
        if self._connection is not None and not self._connection.closed:
            with contextlib.suppress(psycopg.Error):  # wake our own waiter, if any
                self._connection.execute(f"NOTIFY {self._private_channel}")
        with self._listener_lock:
            self._drop_listener()
