"""`SqlBase`: what every part of the SQL outbox store shares — one connection, short
transactions, the statement runner, the database clock — and the row helpers."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from ._dialect import Dialect
from ._store import BounceRecord, Row, State

__all__ = ["ROW", "SqlBase", "marks", "row"]

log = logging.getLogger("mailbridge.outbox")

ROW = (
    "id, tenant, idempotency_key, state, message_id, envelope_sender, recipients, size,"
    " attempts, created_at, updated_at, not_before, deadline, wait_reason, sent_at,"
    " lease_owner, lease_expires, result, error, envelope_id, delivery"
)


def marks(count: int) -> str:
    return ", ".join("?" * count)


def row(values: Sequence[Any], bounces: Sequence[BounceRecord] = ()) -> Row:
    fields = list(values)
    fields[3] = State(fields[3])
    fields[6] = tuple(json.loads(fields[6]))
    return attrs.evolve(Row(*fields), bounces=tuple(bounces))


class SqlBase:
    """The connection (one, guarded by a lock) and how statements run on it."""

    def __init__(self, url: str, dialect: Dialect) -> None:
        self.url = url
        self.dialect = dialect
        self._lock = threading.RLock()
        self._connection = dialect.connect()
        self._cursor = ""  # the tenant served last: claims visit tenants in turn after it

    def __repr__(self) -> str:
        return f"<SqlStore {self.dialect.name}>"

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Any]:
        with self._lock:
            cursor = self._connection.cursor()
            try:
                self.dialect.begin(cursor, write=write)
            except Exception as exc:
                raise self.dialect.failure(exc) from None
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException as exc:
                try:
                    cursor.execute("ROLLBACK")
                except Exception:  # gone with the connection, or rolled back already
                    log.debug("outbox: ROLLBACK failed after %s", type(exc).__name__)
                failure = self.dialect.failure(exc)
                if failure is exc:
                    raise
                raise failure from None

    def _shift(self, cursor: Any, now: float) -> float:
        """How far the database's clock is ahead of the caller's `now` (0 without one).

        Times a caller passes are moved by it, times returned to it moved back: a worker
        whose clock is off still writes and compares leases by the database's clock."""
        if self.dialect.clock_sql is None:
            return 0.0
        return float(self._run(cursor, self.dialect.clock_sql).fetchone()[0]) - now

    def _run(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor.execute(self.dialect.sql(sql), tuple(params))
        return cursor
