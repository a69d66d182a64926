"""The suppression list: addresses that bounced hard, so that nothing is sent to them again.

`SuppressionList` is the protocol `DeliveryClient(suppression=...)` asks before
sending; `SqliteSuppressionList` keeps it in an SQLite file (WAL), shared by
threads and processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import idna

from ..errors import ConfigurationError, SuppressionListError

__all__ = ["SqliteSuppressionList", "Suppression", "SuppressionList", "normalize_address"]

MAX_DETAIL = 1000
BUSY_TIMEOUT = 10.0  # seconds to wait for another writer
_STATUS = re.compile(r"^5\.\d{1,3}\.\d{1,3}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def normalize_address(address: str) -> str:
    """The form addresses are stored and compared in: trimmed, without <>, lower case."""
    if not isinstance(address, str):
        raise ConfigurationError("address", "must be a string")
    text = address.strip().removeprefix("<").removesuffix(">").strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or _CONTROL.search(text) or len(text) > 320:
        raise ConfigurationError("address", f"not an email address: {address!r}")
    try:  # IDNA 2008 (UTS 46), as mail servers write it: straße.de is not strasse.de
        domain = idna.encode(domain, uts46=True).decode("ascii") if not domain.isascii() else domain
    except (idna.IDNAError, UnicodeError):
        raise ConfigurationError("address", f"not an email address: {address!r}") from None
    return f"{local}@{domain}"


@attrs.frozen
class Suppression:
    """Why an address is suppressed: `reason` (e.g. "user_unknown", the bounce reasons of
    `mailbridge.bounces`), the RFC 3463 `status` (e.g. "5.1.1") when known, the remote
    server's `detail`, and when it was added (UTC)."""

    address: str
    reason: str
    status: str | None
    added_at: dt.datetime
    detail: str | None = None


@runtime_checkable
class SuppressionList(Protocol):
    """Addresses that must not get mail: "did this address hard-bounce before?".

    `lookup` answers for many addresses at once (only suppressed ones are in
    the result, keyed by the address as given); `add` records a hard bounce;
    `remove` lifts it (e.g. the customer fixed the mailbox) and says whether it
    was there.
    """

    def lookup(self, addresses: Iterable[str]) -> dict[str, Suppression]: ...

    def add(
        self,
        address: str,
        *,
        reason: str,
        status: str | None = None,
        detail: str | None = None,
    ) -> Suppression: ...

    def remove(self, address: str) -> bool: ...


def _check_entry(reason: str, status: str | None, detail: str | None) -> str | None:
    if not isinstance(reason, str) or not _REASON.match(reason):
        raise ConfigurationError("reason", "must be a short lower-case word such as user_unknown")
    if status is not None and (not isinstance(status, str) or not _STATUS.match(status)):
        raise ConfigurationError(
            "status", "must be a permanent RFC 3463 status (5.x.y): soft bounces are not suppressed"
        )
    if detail is None:
        return None
    if not isinstance(detail, str):
        raise ConfigurationError("detail", "must be a string")
    return _CONTROL.sub(" ", detail).strip()[:MAX_DETAIL] or None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    status TEXT,
    detail TEXT,
    added_at TEXT NOT NULL
)
"""
_CHUNK = 500  # addresses per SELECT (SQLite's variable limit is 999 on old builds)


class SqliteSuppressionList:
    """A `SuppressionList` in an SQLite database file (created if missing).

    WAL journal and a busy timeout make it safe to share between threads and
    processes; each operation uses its own short transaction. Addresses are
    compared case-insensitively (see `normalize_address`).
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        with self._database() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file: once is enough
            db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"<SqliteSuppressionList {str(self.path)!r}>"

    @contextlib.contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own for one operation: nothing shared between threads, and
        nothing a forked process could inherit half-used."""
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise SuppressionListError(f"cannot open {self.path}: {exc}") from None
        try:
            yield db
        except sqlite3.Error as exc:
            raise SuppressionListError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._database() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def lookup(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        """The suppressed ones among `addresses`, keyed as given."""
        wanted: dict[str, list[str]] = {}
        for address in addresses:
            wanted.setdefault(normalize_address(address), []).append(address)
        keys = list(wanted)
        found: dict[str, Suppression] = {}
        with self._database() as db:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT address, reason, status, detail, added_at FROM suppressions "  # noqa: S608
                    f"WHERE address IN ({marks})",
                    chunk,
                ).fetchall()
                for row in rows:
                    entry = _entry(row)
                    for given in wanted[entry.address]:
                        found[given] = entry
        return found

    def get(self, address: str) -> Suppression | None:
        """The suppression of `address`, or None."""
        return self.lookup([address]).get(address)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.get(address) is not None

    def add(
        self,
        address: str,
        *,
        reason: str,
        status: str | None = None,
        detail: str | None = None,
    ) -> Suppression:
        """Suppress `address` (again: the newest reason wins); returns the entry."""
        key = normalize_address(address)
        detail = _check_entry(reason, status, detail)
        entry = Suppression(key, reason, status, self._clock().astimezone(dt.UTC), detail)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO suppressions (address, reason, status, detail, added_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(address) DO UPDATE SET "
                "reason=excluded.reason, status=excluded.status, detail=excluded.detail, "
                "added_at=excluded.added_at",
                (key, reason, status, detail, entry.added_at.isoformat()),
            )
        return entry

    def remove(self, address: str) -> bool:
        """Lift the suppression of `address`; True if it was suppressed."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM suppressions WHERE address = ?", (normalize_address(address),)
            )
        return cursor.rowcount > 0

    def __len__(self) -> int:
        with self._database() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM suppressions").fetchone()
        return int(count)

    def entries(self) -> list[Suppression]:
        """Every suppression, oldest first."""
        with self._database() as db:
            rows = db.execute(
                "SELECT address, reason, status, detail, added_at FROM suppressions "
                "ORDER BY added_at, address"
            ).fetchall()
        return [_entry(row) for row in rows]


def _entry(row: tuple[str, str, str | None, str | None, str]) -> Suppression:
    address, reason, status, detail, added_at = row
    return Suppression(address, reason, status, dt.datetime.fromisoformat(added_at), detail)
