"""Opening a store from a URL: `sqlite:///…` (stdlib) or `postgresql://…` (extra)."""

from __future__ import annotations

import importlib

from ..errors import ConfigurationError
from ._sql import SqlStore
from ._sqlite import SqliteDialect
from ._store import Store

__all__ = ["open_store"]


def open_store(url: str) -> Store:
    """The store for `url`; its schema is not touched (see `Store.migrate`)."""
    if not isinstance(url, str):
        raise ConfigurationError("url", "must be a string such as sqlite:///outbox.db")
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        return SqlStore(url, SqliteDialect(url))
    if scheme in ("postgresql", "postgres"):
        try:
            module = importlib.import_module("._postgres", __package__)
        except ImportError as exc:
            raise ConfigurationError(
                "url",
                "PostgreSQL needs the postgres extra"
                f" (pip install 'mailbridge-documents[postgres]'): {exc}",
            ) from None
        dialect = module.PostgresDialect(url)
        return SqlStore(url, dialect)
    raise ConfigurationError("url", "use sqlite:///path/to/outbox.db or postgresql://…")
