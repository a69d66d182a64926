"""Token stores fail typed: every SQLite or file-system failure is a `TokenStoreError`."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from mailbridge.errors import OAuthError, TokenStoreError
from mailbridge.oauth import AccessToken, CachingTokenProvider, SqliteTokenStore
from mailbridge.oauth._provider import fetch_token

SECRET_BLOB = "refresh-token-that-must-not-leak"


def test_a_directory_that_does_not_exist_is_a_typed_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "tokens.sqlite3"
    with pytest.raises(TokenStoreError) as caught:
        SqliteTokenStore(path)
    assert str(path) in str(caught.value) and not caught.value.temporary


def test_a_file_that_is_not_a_database_is_a_typed_error_on_load_save_and_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.sqlite3"
    store = SqliteTokenStore(path)
    store.save("acme", SECRET_BLOB)
    for leftover in (tmp_path / "tokens.sqlite3-wal", tmp_path / "tokens.sqlite3-shm"):
        leftover.unlink(missing_ok=True)
    path.write_bytes(b"this is not an SQLite file at all, " * 200)
    for call in (
        lambda: store.load("acme"),
        lambda: store.save("acme", SECRET_BLOB),
        lambda: store.lock("acme").__enter__(),
    ):
        with pytest.raises(TokenStoreError) as caught:
            call()
        message = str(caught.value)
        assert str(path) in message and "not a database" in message
        assert SECRET_BLOB not in message and not caught.value.temporary
    with pytest.raises(TokenStoreError):
        SqliteTokenStore(path)


def test_a_database_busy_past_the_wait_is_a_temporary_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite3"
    store = SqliteTokenStore(path, lock_timeout=0.2)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # another program writes and does not finish
        started = time.monotonic()
        for call in (
            lambda: store.save("acme", SECRET_BLOB),
            lambda: store.lock("acme").__enter__(),
        ):
            with pytest.raises(TokenStoreError) as caught:
                call()
            assert caught.value.temporary and str(path) in str(caught.value)
            assert "locked" in str(caught.value)
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
    store.save("acme", "after")  # usable again
    assert store.load("acme") == "after"


def test_a_full_disk_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.sqlite3"
    store = SqliteTokenStore(path)
    connect = store._connect

    def full() -> sqlite3.Connection:  # the file may not grow: what a full disk does
        db = connect()
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(store, "_connect", full)
    with pytest.raises(TokenStoreError) as caught:
        store.save("acme", "x" * 200_000)
    assert "full" in str(caught.value) and str(path) in str(caught.value)
    assert "xxxx" not in str(caught.value)


def test_a_token_provider_passes_the_store_error_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite3"
    store = SqliteTokenStore(path)

    def acquire(rejected: str | None) -> AccessToken:
        store.load("acme")
        return AccessToken("tok", time.time() + 3600)

    path.unlink()
    path.mkdir()  # the file became a directory: SQLite cannot open it
    with pytest.raises(TokenStoreError) as caught:
        fetch_token(CachingTokenProvider(acquire))
    assert isinstance(caught.value, OAuthError) and str(path) in str(caught.value)
