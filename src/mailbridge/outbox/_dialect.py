"""The seam between `SqlStore` and a database: what differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Dialect"]


class Dialect(Protocol):
    """One database's connection and SQL differences; `SqlStore` does everything else.

    Statements are written with `?` placeholders; `sql()` rewrites them
    (PostgreSQL: `%s`). `claim_lock` is appended to the claim's candidate SELECT
    ("FOR UPDATE SKIP LOCKED" on PostgreSQL), `row_lock` to SELECTs of rows that
    are then updated ("FOR UPDATE"); both are empty for SQLite, whose
    `BEGIN IMMEDIATE` takes the database's write lock for the whole transaction.
    """

    name: str
    blob: str  # column type for bytes
    real: str  # column type for float seconds
    json_length: str  # SQL for the length of the JSON array in TEXT column `{}`
    claim_lock: str
    row_lock: str
    # A SELECT of the database's clock in UNIX seconds, or None to trust the caller's
    # `now` (SQLite: one machine, one clock). With one, every time a caller passes is
    # read relative to the `now` it passes, so workers on several machines agree.
    clock_sql: str | None

    def connect(self) -> Any:
        """A DB-API connection in autocommit mode (the store issues BEGIN/COMMIT)."""
        ...

    def sql(self, text: str) -> str:
        """`text` with its `?` placeholders in this driver's style."""
        ...

    def begin(self, cursor: Any, *, write: bool) -> None:
        """Start a transaction (`write`: one that will change rows)."""
        ...

    def is_unique_violation(self, exc: BaseException) -> bool:
        """True when `exc` is the driver's unique-constraint error."""
        ...

    def failure(self, exc: BaseException) -> BaseException:
        """`exc` as an `OutboxError` when it is the database failing (locked, I/O, lost);
        anything else (a bug) as it is."""
        ...

    def notify(self, cursor: Any) -> None:
        """Inside an enqueue's transaction: wake waiting workers once it commits."""
        ...

    def lock_schema(self, cursor: Any) -> None:
        """Inside a schema transaction: keep other processes out until it ends."""
        ...

    def wait(self, timeout: float) -> None:
        """Block up to `timeout` seconds or until a notification arrives."""
        ...

    def close(self) -> None:
        """Release what `connect` and `wait` opened."""
        ...
