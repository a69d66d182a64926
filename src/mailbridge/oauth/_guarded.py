"""An application's own `TokenStore`, its failures typed as `TokenStoreError`.

mailbridge's stores (`MemoryTokenStore`, `SqliteTokenStore`) raise typed errors
themselves; anything else they raise is a bug of ours and is not disguised. A store
of the application's may raise whatever its database raises (`sqlite3.Error`,
`OSError`, a driver's own errors): the adapters call it through `guarded()`, which
turns such a failure into a `TokenStoreError` that names the store's class, the
tenant and the operation, chained to the original. The message never quotes the
original's text (it may hold a blob, i.e. a refresh token, or a connection string).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType

from ..diagnosis import Category, Diagnosis
from ..errors import MailbridgeError, TokenStoreError
from ._sqlite import SqliteTokenStore
from ._store import MemoryTokenStore, TokenStore

__all__ = ["GuardedTokenStore", "guarded"]

_OURS = (MemoryTokenStore, SqliteTokenStore)
# Bugs wherever they happen (RecursionError is a RuntimeError): never disguised.
_BUGS = (AssertionError, RecursionError)
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def guarded(store: TokenStore) -> TokenStore:
    """`store` itself when it is one of mailbridge's, else `store` behind a guard."""
    if type(store) in _OURS or isinstance(store, GuardedTokenStore):
        return store
    return GuardedTokenStore(store)


def _reason(exc: Exception) -> str:
    """What failed, without the exception's text: its type, errno text or SQLite code."""
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return f"{name}: {exc.strerror}"  # never the file name (it may be anything)
    code = getattr(exc, "sqlite_errorname", None) if isinstance(exc, sqlite3.Error) else None
    return f"{name} {code}" if isinstance(code, str) else name


def _temporary(exc: Exception) -> bool:
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", None) in _BUSY


class GuardedTokenStore:
    """A `TokenStore` around the application's: its failures become `TokenStoreError`s."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        kind = type(store)
        self.name = f"{kind.__module__}.{kind.__qualname__}"

    def failed(self, exc: Exception, doing: str) -> TokenStoreError:
        """The typed error for `exc`, raised by the store while `doing`."""
        temporary = _temporary(exc)
        advice = (
            "The application's token store is busy or unreachable; try again in a minute."
            if temporary
            else "The application's token store failed; its operator must check it "
            "(its database, its disk, its log)."
        )
        return TokenStoreError(
            f"{doing} the application's token store {self.name} failed ({_reason(exc)})",
            diagnosis=Diagnosis(
                Category.TIMEOUT if temporary else Category.PROTOCOL,
                "The stored email logins could not be read or written.",
                (advice,),
            ),
            error="token_store",
            temporary=temporary,
        )

    @contextmanager
    def _typed(self, doing: str) -> Iterator[None]:
        try:
            yield
        except MailbridgeError:
            raise
        except _BUGS:
            raise
        except Exception as exc:
            raise self.failed(exc, doing) from exc

    def load(self, tenant: str) -> str | None:
        doing = f"reading the sign-in of tenant {tenant!r} from"
        with self._typed(doing):
            blob = self.store.load(tenant)
        if blob is not None and not isinstance(blob, str):  # the store's bug; never its repr
            raise self.failed(TypeError(f"load() gave {type(blob).__name__}, not str"), doing)
        return blob

    def save(self, tenant: str, blob: str) -> None:
        with self._typed(f"saving the sign-in of tenant {tenant!r} to"):
            self.store.save(tenant, blob)

    def lock(self, tenant: str) -> AbstractContextManager[None]:
        return _GuardedLock(self, tenant)

    def __repr__(self) -> str:
        return f"<GuardedTokenStore {self.name}>"


class _GuardedLock:
    """The store's lock: failures taking or releasing it are typed; an exception of the
    block inside passes unchanged, and the store's lock may not swallow it."""

    def __init__(self, guard: GuardedTokenStore, tenant: str) -> None:
        self._guard = guard
        self._tenant = tenant
        self._inner: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        with self._guard._typed(f"locking the sign-in of tenant {self._tenant!r} in"):
            inner = self._guard.store.lock(self._tenant)
            inner.__enter__()
        self._inner = inner

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        inner, self._inner = self._inner, None
        if inner is None:  # pragma: no cover - __enter__ failed, so no block ran
            return
        with self._guard._typed(f"unlocking the sign-in of tenant {self._tenant!r} in"):
            try:
                inner.__exit__(kind, value, traceback)
            except BaseException as exc:
                if exc is not value:  # else: the block's own error, re-raised by the lock
                    raise
