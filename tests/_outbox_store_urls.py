"""The databases the outbox store suite runs against: SQLite always, PostgreSQL when available.

A test asks for `store_url` (see tests/test_outbox_store.py). PostgreSQL joins when a
fixture named `postgres_url` exists (it yields a fresh, empty database URL per test)
(pginfra's PostgreSQL cluster provides it); without it the PostgreSQL runs are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailbridge.outbox import Store, open_store

STORES = ["sqlite", "postgresql"]


def store_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL for the parametrised kind of database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    try:
        return str(request.getfixturevalue("postgres_url"))
    except pytest.FixtureLookupError:
        pytest.skip("no PostgreSQL for the store suite (no postgres_url fixture)")


def hand_clock(store: Store) -> Store:
    """`store` reading time from the tests' `now` (T0 …), not the database's clock."""
    store.dialect.clock_sql = None  # type: ignore[attr-defined]
    return store


@contextmanager
def migrated_store(url: str) -> Iterator[Store]:
    """A store for `url` with the current schema and the tests' clock; closed after."""
    opened = hand_clock(open_store(url))
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()
