"""The PostgreSQL dialect: psycopg 3, `FOR UPDATE SKIP LOCKED` claims, LISTEN/NOTIFY wake-ups.

Any number of worker processes on any number of machines share one outbox: a claim locks
the rows it takes and skips rows another claim holds (no waiting, no double claim), the
tenants' pacing rows are locked in tenant order (counters hold across workers), and every
transaction is short and committed before a byte of SMTP is sent.

An enqueue's transaction sends `NOTIFY mailbridge_outbox`, which PostgreSQL delivers when it
commits; idle workers `LISTEN` on a second connection, opened on their first `wait()`, and
wake at once instead of polling.

A connection lost between two transactions (a server restart, a failover, an idle timeout)
is opened again when the next transaction begins; one lost inside a transaction fails that
transaction with an `OutboxError` (it rolled back on the server) and the next one reconnects.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from ..errors import ConfigurationError, OutboxError

__all__ = ["CHANNEL", "PostgresDialect"]

CHANNEL = "mailbridge_outbox"
CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise (connect_timeout=)
SCHEMA_LOCK = 0x6D62_6F78  # advisory lock key ("mbox") held while the schema is read or migrated
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
RECONNECT_PAUSE = 1.0  # seconds an idle worker waits before listening again after an error


class PostgresDialect:
    """PostgreSQL through psycopg 3; the store's one connection plus a listener for `wait()`."""

    name = "postgresql"
    blob = "BYTEA"
    real = "DOUBLE PRECISION"
    json_length = "json_array_length(({})::json)"
    claim_lock = "FOR UPDATE SKIP LOCKED"
    row_lock = "FOR UPDATE"
    # workers on several machines: leases and due times by the server's clock
    clock_sql: str | None = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
        except ValueError:  # "Invalid IPv6 URL": say so without quoting the URL
            raise ConfigurationError(
                "url", "cannot open the PostgreSQL outbox: the URL is malformed"
            ) from None
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ConfigurationError("url", "a PostgreSQL outbox URL looks like postgresql://…")
        self._url = url
        self._secrets = _secrets(url, parts.password)
        self._connection: _Session | None = None
        self._listener: psycopg.Connection[Any] | None = None
        # close() wakes this instance's own waiter on a channel only it listens on.
        self._private_channel = f"{CHANNEL}_{uuid.uuid4().hex}"
        self._closed = threading.Event()
        self._listener_lock = threading.Lock()

    def __repr__(self) -> str:  # the URL may hold a password: never show it
        return "<PostgresDialect>"

    def connect(self) -> Any:
        self._connection = _Session(self._open)
        return self._connection

    def _open(self) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {"application_name": "mailbridge-outbox"}
        if "connect_timeout" not in self._url:
            options["connect_timeout"] = CONNECT_TIMEOUT
        try:
            return psycopg.connect(self._url, autocommit=True, **options)
        except psycopg.Error as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            for secret in self._secrets:  # libpq quotes a malformed token of the URL: scrub it
                problem = problem.replace(secret, "***")
            raise ConfigurationError(
                "url", f"cannot open the PostgreSQL outbox: {problem}"
            ) from None

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def begin(self, cursor: Any, *, write: bool) -> None:
        # Explicit, whatever default_transaction_isolation says: SKIP LOCKED claims rely on
        # READ COMMITTED re-reading a locked row's newest version.
        try:
            cursor.execute(_BEGIN)
        except OutboxError:
            if not isinstance(cursor, _Cursor):
                raise
            cursor.reconnect()  # nothing of this transaction ran yet: start it again
            cursor.execute(_BEGIN)

    def lock_schema(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def failure(self, exc: BaseException) -> BaseException:
        return exc  # the cursor already turns a lost connection into an OutboxError

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
            with contextlib.suppress(psycopg.Error, OutboxError):  # wake our own waiter, if any
                self._connection.cursor().execute(f"NOTIFY {self._private_channel}")
        with self._listener_lock:
            self._drop_listener()


def _secrets(url: str, password: str | None) -> list[str]:
    """The password of `url` (in its user part or its query) as written and decoded."""
    found = [password] if password else []
    query = url.partition("?")[2]
    found += [
        value
        for key, _, value in (item.partition("=") for item in query.split("&"))
        if key.lower() == "password" and value
    ]
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _lost(exc: psycopg.Error) -> OutboxError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OutboxError(f"the PostgreSQL outbox failed: {text}")


class _Session:
    """The store's connection; `reconnect()` replaces it after it was lost."""

    def __init__(self, open_connection: Callable[[], psycopg.Connection[Any]]) -> None:
        self._open = open_connection
        self.connection = open_connection()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self.connection.closed

    def cursor(self) -> _Cursor:
        if self._closed:
            raise OutboxError("the outbox is closed")
        if self.connection.closed:  # known lost (a failed statement): a new one
            self.reconnect()
        return _Cursor(self)

    def reconnect(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.connection.close()
        self.connection = self._open()

    def close(self) -> None:
        self._closed = True
        self.connection.close()


class _Cursor:
    """A DB-API cursor for the store; a lost connection or server failure is an OutboxError.

    Constraint violations stay psycopg's own errors (the store tells them apart).
    """

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._cursor = session.connection.cursor()

    def execute(self, query: str, params: Sequence[Any] | None = None) -> _Cursor:
        try:
            self._cursor.execute(query.encode(), params)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _lost(exc) from None
        return self

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def reconnect(self) -> None:
        self._session.reconnect()
        self._cursor = self._session.connection.cursor()
