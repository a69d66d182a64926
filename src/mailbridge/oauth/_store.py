"""`TokenStore`: where an application keeps each tenant's refresh token (an opaque blob)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, runtime_checkable

from ..diagnosis import Category, Diagnosis
from ..errors import OAuthError, TokenStoreError

__all__ = ["MemoryTokenStore", "TokenStore", "lock_timed_out", "store_failed"]

DEFAULT_LOCK_TIMEOUT = 30.0


@runtime_checkable
class TokenStore(Protocol):
    """Per-tenant storage of OAuth state (msal's token cache, google-auth's credentials).

    `lock(tenant)` is held around load → refresh → save, so that two workers never
    refresh with the same refresh token and lose a rotated one. Blobs hold secrets:
    implementations must not log them.
    """

    def load(self, tenant: str) -> str | None:
        """The blob saved for `tenant`, or None."""
        ...

    def save(self, tenant: str, blob: str) -> None:
        """Replace `tenant`'s blob."""
        ...

    def lock(self, tenant: str) -> AbstractContextManager[None]:
        """Exclusive access to `tenant`'s blob; raises `OAuthError` (temporary) on time-out."""
        ...


def lock_timed_out(tenant: str, seconds: float) -> OAuthError:
    """The error when another worker holds a tenant's token lock for too long."""
    return OAuthError(
        f"another worker held the token lock of tenant {tenant!r} for over {seconds:g} s",
        diagnosis=Diagnosis(
            Category.TIMEOUT,
            "Another worker is renewing this account's login and has not finished.",
            ("Try again in a minute.",),
        ),
        error="lock_timeout",
        temporary=True,
    )


def store_failed(where: str, exc: BaseException, doing: str) -> TokenStoreError:
    """The error when the token store at `where` (a file name) failed while `doing`.

    Busy or locked is temporary; a missing directory, a file that is not a database or
    a full disk is not. The message names the file and the failure, never a blob.
    """
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    reason = " ".join(reason.split())[:120] or type(exc).__name__
    temporary = any(word in reason.lower() for word in ("locked", "busy"))
    advice = (
        ("Another program holds the token store for long; try again in a minute.",)
        if temporary
        else (
            f"Check that {where} exists, is an SQLite file of mailbridge's, is writable "
            "and its disk has room; the application's operator must fix it.",
        )
    )
    return TokenStoreError(
        f"{doing} the token store {where} failed: {reason}",
        diagnosis=Diagnosis(
            Category.TIMEOUT if temporary else Category.PROTOCOL,
            "The stored email logins could not be read or written.",
            advice,
        ),
        error="token_store",
        temporary=temporary,
    )


class _TenantLocks:
    """One `threading.Lock` per tenant, created on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, tenant: str, timeout: float) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(tenant, threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise lock_timed_out(tenant, timeout)
        try:
            yield
        finally:
            lock.release()


class MemoryTokenStore:
    """A `TokenStore` in this process's memory (tests, single-process tools)."""

    def __init__(self, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self._blobs: dict[str, str] = {}
        self._guard = threading.Lock()
        self._locks = _TenantLocks()
        self._lock_timeout = lock_timeout

    def load(self, tenant: str) -> str | None:
        with self._guard:
            return self._blobs.get(tenant)

    def save(self, tenant: str, blob: str) -> None:
        with self._guard:
            self._blobs[tenant] = blob

    def lock(self, tenant: str) -> AbstractContextManager[None]:
        return self._locks.hold(tenant, self._lock_timeout)

    def __repr__(self) -> str:
        return f"<MemoryTokenStore tenants={len(self._blobs)}>"
