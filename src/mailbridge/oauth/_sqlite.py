"""`SqliteTokenStore`: tokens in one SQLite file (WAL), locked per tenant across processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ._store import DEFAULT_LOCK_TIMEOUT, _TenantLocks, lock_timed_out, store_failed

__all__ = ["SqliteTokenStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_tokens (
    tenant TEXT PRIMARY KEY, blob TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_locks (
    tenant TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL);
"""
POLL_INTERVAL = 0.05
DEFAULT_LEASE = 10.0


class SqliteTokenStore:
    """A `TokenStore` in one SQLite file, shared by threads and processes on one machine.

    `lock(tenant)` takes a lease row and waits at most `lock_timeout` seconds for it.
    The holder extends its lease while it works (a slow token endpoint does not let a
    second worker in); a crashed holder's lease runs out after `lease` seconds.
    The file (and so its -wal and -shm files) is readable by its owner only: it holds
    refresh tokens; an existing file others may read is made private.
    Every failure of the file (no such directory, not a database, disk full, busy past
    `lock_timeout`) is a `TokenStoreError` naming the file; busy or locked is temporary.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        self.path = Path(path)
        self._lock_timeout = lock_timeout
        self._lease = lease
        self._locks = _TenantLocks()
        with self._failures("opening"):
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            mode = self.path.stat().st_mode
            if mode & 0o077:  # an existing file others may read: SQLite gives -wal/-shm its mode
                self.path.chmod(mode & 0o700)
            with contextlib.closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """SQLite's and the file system's errors as a `TokenStoreError` naming the file."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise store_failed(str(self.path), exc, doing) from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self._lock_timeout, isolation_level=None)

    def load(self, tenant: str) -> str | None:
        with self._failures("reading"), contextlib.closing(self._connect()) as db:
            row = db.execute("SELECT blob FROM oauth_tokens WHERE tenant = ?", (tenant,)).fetchone()
        if row is None:
            return None
        value = row[0]  # another program may have written bytes: never their repr
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def save(self, tenant: str, blob: str) -> None:
        with self._failures("writing"), contextlib.closing(self._connect()) as db:
            db.execute(
                "INSERT INTO oauth_tokens (tenant, blob, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE "
                "SET blob = excluded.blob, updated = excluded.updated",
                (tenant, blob, time.time()),
            )

    def lock(self, tenant: str) -> AbstractContextManager[None]:
        return self._hold(tenant)

    @contextmanager
    def _hold(self, tenant: str) -> Iterator[None]:
        deadline = time.monotonic() + self._lock_timeout
        with self._locks.hold(tenant, self._lock_timeout):  # threads of this process queue here
            holder = f"{os.getpid()}-{uuid.uuid4().hex}"
            while not self._take_lease_or_fail(tenant, holder):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise lock_timed_out(tenant, self._lock_timeout)
                time.sleep(min(POLL_INTERVAL, remaining))
            done = threading.Event()
            keeper = threading.Thread(
                target=self._keep_lease, args=(tenant, holder, done), daemon=True
            )
            keeper.start()
            try:
                yield
            finally:
                done.set()
                keeper.join()
                with self._failures("unlocking"), contextlib.closing(self._connect()) as db:
                    db.execute(
                        "DELETE FROM oauth_locks WHERE tenant = ? AND holder = ?", (tenant, holder)
                    )

    def _keep_lease(self, tenant: str, holder: str, done: threading.Event) -> None:
        """Extend `holder`'s lease every third of it until `done` (the lock is released)."""
        while not done.wait(self._lease / 3):
            try:
                with contextlib.closing(self._connect()) as db:
                    db.execute(
                        "UPDATE oauth_locks SET expires = ? WHERE tenant = ? AND holder = ?",
                        (time.time() + self._lease, tenant, holder),
                    )
            except sqlite3.Error:  # busy or gone: the next beat tries again
                continue

    def _take_lease_or_fail(self, tenant: str, holder: str) -> bool:
        with self._failures("locking"):
            return self._take_lease(tenant, holder)

    def _take_lease(self, tenant: str, holder: str) -> bool:
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = db.execute(
                    "SELECT expires FROM oauth_locks WHERE tenant = ?", (tenant,)
                ).fetchone()
                if row is not None and row[0] > now:
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO oauth_locks (tenant, holder, expires) VALUES (?, ?, ?)",
                    (tenant, holder, now + self._lease),
                )
                return True
            finally:
                db.execute("COMMIT")

    def __repr__(self) -> str:
        return f"<SqliteTokenStore {str(self.path)!r}>"
