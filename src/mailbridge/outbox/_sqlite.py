"""The SQLite dialect: stdlib `sqlite3`, WAL, `BEGIN IMMEDIATE` claims, polling wake-ups."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError, OutboxError

__all__ = ["SqliteDialect", "sqlite_path"]

BUSY_TIMEOUT = 30.0  # seconds a transaction waits for another process's write lock
POLL_INTERVAL = 0.02  # how often an idle worker looks for new rows another process wrote
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


def sqlite_path(url: str) -> tuple[str, str]:
    """The file path and `synchronous` mode of a `sqlite:///path` URL.

    As in SQLAlchemy: `sqlite:///outbox.db` is relative, `sqlite:////var/x.db`
    absolute, `sqlite:///:memory:` in memory; `?synchronous=normal` trades the
    last commits on power loss (never on a crash) for speed.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigurationError(
            "url", "a SQLite outbox URL looks like sqlite:///path/to/outbox.db"
        )
    path = unquote(parts.path[1:])
    if not path:
        raise ConfigurationError("url", "the SQLite URL names no file")
    options = parse_qs(parts.query)
    mode = options.pop("synchronous", ["full"])[-1].lower()
    if mode not in _SYNCHRONOUS or options:
        raise ConfigurationError("url", "the only SQLite option is synchronous=full|normal")
    return path, _SYNCHRONOUS[mode]


class SqliteDialect:
    """SQLite through the standard library; one connection, serialised by the store."""

    name = "sqlite"
    blob = "BLOB"
    real = "REAL"
    json_length = "json_array_length({})"
    claim_lock = ""
    row_lock = ""
    clock_sql: str | None = None  # one machine: the caller's clock is the clock

    def __init__(self, url: str) -> None:
        self.path, self.synchronous = sqlite_path(url)
        self._event = threading.Event()

    def connect(self) -> Any:
        try:
            if self.path != ":memory:" and not self.path.startswith("file:"):
                # A new file is its owner's only (SQLite gives -wal/-shm its mode): it holds
                # the documents' bytes. An existing file keeps the mode its operator chose.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous}")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigurationError("url", f"cannot open the SQLite outbox: {exc}") from None
        return connection

    def sql(self, text: str) -> str:
        return text

    def begin(self, cursor: Any, *, write: bool) -> None:
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError):  # locked, I/O, full
            return OutboxError(f"the outbox database failed: {exc}")
        return exc

    def notify(self, cursor: Any) -> None:
        self._event.set()

    def lock_schema(self, cursor: Any) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's write lock

    def wait(self, timeout: float) -> None:
        # Other processes cannot signal us: poll at a short interval.
        if self._event.wait(min(timeout, POLL_INTERVAL)):
            self._event.clear()

    def close(self) -> None:
        self._event.set()
