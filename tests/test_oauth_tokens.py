"""TokenProvider, token stores, settings, and SMTP renewing a refused token (sync, async)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mailbridge import AuthenticationError, ImapSettings, SmtpSettings
from mailbridge.errors import ConfigurationError, OAuthError
from mailbridge.oauth import (
    AccessToken,
    CachingTokenProvider,
    MemoryTokenStore,
    SqliteTokenStore,
    TokenProvider,
)
from mailbridge.smtp import SmtpConnection
from mailbridge.smtp._async_connection import AsyncSmtpConnection
from mailbridge.testing import FakeSmtpServer

USER = "carol@example.test"
SRC = str(Path(__file__).resolve().parents[1] / "src")


class Counting:
    """An `acquire` that hands out tok-1, tok-2, ... valid for `lifetime` seconds."""

    def __init__(self, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.calls: list[str | None] = []

    def __call__(self, rejected: str | None) -> AccessToken:
        self.calls.append(rejected)
        time.sleep(self.delay)
        return AccessToken(f"tok-{len(self.calls)}", time.time() + self.lifetime)


def test_a_token_is_reused_until_it_nears_expiry_then_renewed() -> None:
    now = [1000.0]
    acquire = Counting()

    def fixed(rejected: str | None) -> AccessToken:
        acquire.calls.append(rejected)
        return AccessToken(f"tok-{len(acquire.calls)}", now[0] + 3600)

    provider = CachingTokenProvider(fixed, margin=300, clock=lambda: now[0])
    assert provider.token() == "tok-1"
    now[0] += 3000
    assert provider.token() == "tok-1"  # 600 s left
    now[0] += 301
    assert provider.token() == "tok-2"  # 299 s left: renewed before it expires
    assert acquire.calls == [None, None]


def test_invalidate_names_the_refused_token_to_acquire() -> None:
    acquire = Counting()
    provider = CachingTokenProvider(acquire)
    first = provider.token()
    provider.invalidate()
    assert provider.token() == "tok-2"
    assert acquire.calls == [None, first]


def test_a_token_refused_on_two_connections_is_renewed_once() -> None:
    acquire = Counting()
    provider = CachingTokenProvider(acquire)
    old = provider.token()
    provider.reject(old)  # connection A: refused, renewed
    assert provider.token() == "tok-2"
    provider.reject(old)  # connection B, refused with the same old token a moment later
    assert provider.token() == "tok-2"
    assert acquire.calls == [None, old]


def test_threads_sharing_a_provider_acquire_once() -> None:
    acquire = Counting(delay=0.2)
    provider = CachingTokenProvider(acquire)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(provider.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["tok-1"] * 8 and len(acquire.calls) == 1


def test_no_token_or_secret_in_repr() -> None:
    token = AccessToken("ya29.SECRET", 0.0)
    assert "SECRET" not in repr(token)
    provider = CachingTokenProvider(lambda _: token)
    provider.token()
    assert "SECRET" not in repr(provider)
    store = MemoryTokenStore()
    store.save("acme", '{"refresh_token": "SECRET"}')
    assert "SECRET" not in repr(store)


def test_settings_take_a_token_provider_where_they_take_a_password() -> None:
    provider = CachingTokenProvider(Counting())
    assert isinstance(provider, TokenProvider)
    smtp = SmtpSettings("smtp.example", 587, "starttls", username=USER, password=provider)
    assert smtp.oauth2_token is provider and smtp.password is None
    imap = ImapSettings("imap.example", 993, "implicit_tls", username=USER, password=provider)
    assert imap.oauth2_token is provider
    assert "tok-" not in repr(smtp) and "tok-" not in repr(imap)
    with pytest.raises(ConfigurationError):
        SmtpSettings(
            "smtp.example", 587, "starttls", username=USER, password=provider, oauth2_token=provider
        )


@pytest.mark.parametrize("make", [MemoryTokenStore, "sqlite"])
def test_store_locks_are_per_tenant_and_time_out_typed(make: object, tmp_path: Path) -> None:
    def new() -> MemoryTokenStore | SqliteTokenStore:
        if make == "sqlite":
            return SqliteTokenStore(tmp_path / "t.sqlite3", lock_timeout=0.3)
        return MemoryTokenStore(lock_timeout=0.3)

    store, other = new(), new()
    store.save("acme", "blob-1")
    assert other.load("acme") == ("blob-1" if make == "sqlite" else None)
    with store.lock("acme"):
        with store.lock("globex"):  # another tenant is not blocked
            pass
        failure: list[BaseException] = []

        def contend() -> None:
            try:
                with store.lock("acme"):
                    pass
            except OAuthError as exc:
                failure.append(exc)

        thread = threading.Thread(target=contend)
        started = time.monotonic()
        thread.start()
        thread.join(5)
    assert len(failure) == 1 and isinstance(failure[0], OAuthError) and failure[0].temporary
    assert 0.25 < time.monotonic() - started < 3
    with store.lock("acme"):  # released
        pass


def test_the_sqlite_store_is_private_wal_and_locks_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite3"
    store = SqliteTokenStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    import sqlite3

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Another process holds acme's lock for 1 s: we wait for it, and then read its save.
    script = textwrap.dedent(
        f"""
        import sys, time
        from mailbridge.oauth import SqliteTokenStore
        store = SqliteTokenStore({str(path)!r})
        with store.lock("acme"):
            print("locked", flush=True)
            time.sleep(1.0)
            store.save("acme", "rotated")
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with store.lock("acme"):
            waited = time.monotonic() - started
            assert store.load("acme") == "rotated"
    finally:
        holder.wait(10)
    assert 0.5 < waited < 5


def test_a_lease_of_a_crashed_worker_expires(tmp_path: Path) -> None:
    store = SqliteTokenStore(tmp_path / "t.sqlite3", lease=0.3, lock_timeout=5)
    assert store._take_lease("acme", "crashed-worker")  # never released
    started = time.monotonic()
    with store.lock("acme"):
        pass
    assert time.monotonic() - started < 2


def test_a_holder_working_longer_than_its_lease_keeps_the_lock(tmp_path: Path) -> None:
    # Two stores on one file stand for two processes (each has its own thread locks).
    path = tmp_path / "t.sqlite3"
    first = SqliteTokenStore(path, lease=0.3, lock_timeout=5)
    second = SqliteTokenStore(path, lease=0.3, lock_timeout=5)
    events: list[str] = []
    locked = threading.Event()

    def slow_refresh() -> None:
        with first.lock("acme"):
            locked.set()
            time.sleep(1.2)  # a slow token endpoint: four leases long
            events.append("first saved")

    worker = threading.Thread(target=slow_refresh)
    worker.start()
    try:
        assert locked.wait(5)
        with second.lock("acme"):
            events.append("second locked")
    finally:
        worker.join(10)
    assert events == ["first saved", "second locked"]


def test_a_holder_killed_with_sigkill_frees_the_tenant_after_its_lease(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = SqliteTokenStore(path, lease=0.5, lock_timeout=5)
    script = textwrap.dedent(
        f"""
        import time
        from mailbridge.oauth import SqliteTokenStore
        with SqliteTokenStore({str(path)!r}, lease=0.5).lock("acme"):
            print("locked", flush=True)
            time.sleep(30)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        holder.kill()  # SIGKILL: no finally, no DELETE of its lease row
    finally:
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    started = time.monotonic()
    with store.lock("acme"):
        waited = time.monotonic() - started
    assert waited < 2.5


def test_the_default_lease_of_a_crashed_worker_ends_before_a_waiter_gives_up(
    tmp_path: Path,
) -> None:
    store = SqliteTokenStore(tmp_path / "t.sqlite3")
    assert store._lease * 2 <= store._lock_timeout


# -- SMTP: one renewal after a refused token, sync and asyncio alike ------------------------


def refusing_once(server: FakeSmtpServer) -> tuple[CachingTokenProvider, list[str | None]]:
    calls: list[str | None] = []

    def acquire(rejected: str | None) -> AccessToken:
        calls.append(rejected)
        token = f"ya29.t{len(calls)}"
        if len(calls) > 1:
            server.tokens[USER] = token  # the server only knows the renewed token
        return AccessToken(token, time.time() + 3600)

    return CachingTokenProvider(acquire), calls


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_a_refused_token_is_invalidated_and_auth_retried_once(mechanism: str) -> None:
    with FakeSmtpServer(tokens={USER: "unknown-yet"}) as server:
        provider, calls = refusing_once(server)
        settings = server.smtp_settings(
            username=USER, oauth2_token=provider, auth_mechanism=mechanism
        )
        connection = SmtpConnection.open(settings)
        try:
            assert connection.authenticated
        finally:
            connection.close()
        assert calls == [None, "ya29.t1"] and server.oauth_refused == 1
        assert server.oauth_endings == [b"\x01" if mechanism == "OAUTHBEARER" else b""]


def test_a_token_refused_twice_is_an_authentication_error_after_one_retry() -> None:
    with FakeSmtpServer(tokens={USER: "never"}) as server:
        acquire = Counting()
        settings = server.smtp_settings(username=USER, oauth2_token=CachingTokenProvider(acquire))
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(settings)
        assert len(acquire.calls) == 2 and server.oauth_refused == 2
        assert "tok-" not in str(info.value)


def test_a_plain_callable_is_not_retried() -> None:
    with FakeSmtpServer(tokens={USER: "never"}) as server:
        calls: list[int] = []
        settings = server.smtp_settings(
            username=USER, oauth2_token=lambda: str(calls.append(1) or "tok")
        )
        with pytest.raises(AuthenticationError):
            SmtpConnection.open(settings)
        assert calls == [1]


def test_the_asyncio_connection_renews_a_refused_token_too() -> None:
    with FakeSmtpServer(tokens={USER: "unknown-yet"}) as server:
        provider, calls = refusing_once(server)
        settings = server.smtp_settings(username=USER, oauth2_token=provider)

        async def run() -> bool:
            connection = await AsyncSmtpConnection.open(settings)
            try:
                return connection.authenticated
            finally:
                await connection.quit()

        assert asyncio.run(run())
        assert calls == [None, "ya29.t1"] and server.oauth_refused == 1


# -- IMAP: the mechanism the server offers, and one renewal after NO [AUTHENTICATIONFAILED] ----


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_imap_uses_what_the_server_offers_and_renews_a_refused_token_once(
    mechanism: str,
) -> None:
    from mailbridge.imap._connection import close_imap, open_imap
    from mailbridge.testing import FakeImapServer

    other = "AUTH=XOAUTH2" if mechanism == "OAUTHBEARER" else "AUTH=OAUTHBEARER"
    with FakeImapServer(users={}, tokens={USER: "unknown-yet"}) as server:
        server.omit_capabilities = {other}
        calls: list[str | None] = []

        def acquire(rejected: str | None) -> AccessToken:
            calls.append(rejected)
            if len(calls) > 1:
                server.tokens[USER] = f"ya29.t{len(calls)}"
            return AccessToken(f"ya29.t{len(calls)}", time.time() + 3600)

        settings = server.imap_settings(username=USER, oauth2_token=CachingTokenProvider(acquire))
        close_imap(open_imap(settings))
        assert calls == [None, "ya29.t1"] and server.oauth_refused == 1
        assert server.oauth_endings == [b"AQ==" if mechanism == "OAUTHBEARER" else b""]


def test_imap_without_an_oauth_mechanism_is_a_typed_error() -> None:
    from mailbridge.imap._connection import open_imap
    from mailbridge.testing import FakeImapServer

    with FakeImapServer(users={}, tokens={USER: "t"}) as server:
        server.omit_capabilities = {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER"}
        with pytest.raises(AuthenticationError, match="OAUTHBEARER nor AUTH=XOAUTH2"):
            open_imap(server.imap_settings(username=USER, oauth2_token=lambda: "t"))


# -- review: refusals that are not about the token, malformed tokens, short-lived tokens ----


@pytest.mark.parametrize(
    "reply",
    [
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant.",
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "534 5.7.9 Application-specific password required.",
        "530 5.7.0 Must issue a STARTTLS command first.",
    ],
)
def test_a_refusal_not_about_the_token_does_not_burn_a_refresh(reply: str) -> None:
    with FakeSmtpServer(tokens={USER: "tok-1"}) as server:
        server.login_reply = reply
        acquire = Counting()
        settings = server.smtp_settings(username=USER, oauth2_token=CachingTokenProvider(acquire))
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(settings)
        assert info.value.reply is not None and str(info.value.reply.code) == reply[:3]
        assert acquire.calls == [None] and server.oauth_refused == 1


@pytest.mark.parametrize(
    "bad", ["tok\r\nQUIT", "tok\x01user=mallory@example.test", "tök", "tok en", "", "\x00"]
)
@pytest.mark.parametrize("renewable_source", [True, False])
def test_a_malformed_token_is_refused_not_sent(bad: str, renewable_source: bool) -> None:
    with FakeSmtpServer(tokens={USER: "tok-1"}) as server:
        source = (
            CachingTokenProvider(lambda _rejected: AccessToken(bad, time.time() + 3600))
            if renewable_source
            else (lambda: bad)
        )
        settings = server.smtp_settings(username=USER, oauth2_token=source)
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(settings)
        assert server.oauth_refused == 0  # nothing reached the server
        assert bad not in str(info.value) or not bad
        assert info.value.diagnosis is not None


def test_imap_refuses_a_malformed_token_too() -> None:
    from mailbridge.imap._connection import open_imap
    from mailbridge.testing import FakeImapServer

    with FakeImapServer(users={}, tokens={USER: "t"}) as server:
        with pytest.raises(AuthenticationError):
            open_imap(server.imap_settings(username=USER, oauth2_token=lambda: "t\r\nA1 LOGOUT"))
        assert server.oauth_refused == 0


def test_a_token_living_less_than_the_margin_is_not_renewed_on_every_call() -> None:
    now = [1000.0]
    calls: list[str | None] = []

    def short(rejected: str | None) -> AccessToken:
        calls.append(rejected)
        return AccessToken(f"tok-{len(calls)}", now[0] + 240)  # 4 minutes, margin is 5

    provider = CachingTokenProvider(short, clock=lambda: now[0])
    assert [provider.token() for _ in range(5)] == ["tok-1"] * 5
    now[0] += 100
    assert provider.token() == "tok-1"  # 140 s left: still the same token
    now[0] += 30
    assert provider.token() == "tok-2"  # half its life gone: renewed before it expires
    assert calls == [None, None]


def test_the_sqlite_store_reads_a_row_written_as_bytes_as_text(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "t.sqlite3"
    store = SqliteTokenStore(path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO oauth_tokens VALUES ('acme', ?, 0)", (b'{"token": null}',))
    assert store.load("acme") == '{"token": null}'


def test_a_server_refusing_every_token_costs_one_renewal_not_one_per_message() -> None:
    from mailbridge import DeliveryClient, DocumentEmail

    with FakeSmtpServer(tokens={USER: "never"}) as server:
        acquire = Counting()
        settings = server.smtp_settings(username=USER, oauth2_token=CachingTokenProvider(acquire))
        emails = [
            DocumentEmail(to=f"r{n}@example.test", subject="Invoice", body=".") for n in range(6)
        ]
        with DeliveryClient.own_smtp(USER, settings) as client:
            results = list(client.send_many(emails))
        assert [type(outcome.error) for outcome in results] == [AuthenticationError] * 6
        assert len(acquire.calls) == 2  # the first token, and one renewal


def test_imap_does_not_renew_a_fresh_token_refused_again() -> None:
    from mailbridge.imap._connection import open_imap
    from mailbridge.testing import FakeImapServer

    with FakeImapServer(users={}, tokens={USER: "never"}) as server:
        acquire = Counting()
        settings = server.imap_settings(username=USER, oauth2_token=CachingTokenProvider(acquire))
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                open_imap(settings)
        assert len(acquire.calls) == 2 and server.oauth_refused == 4


def test_a_renewed_token_refused_again_is_kept_for_the_cooldown_then_renewed() -> None:
    now = [1000.0]
    acquire = Counting()
    provider = CachingTokenProvider(acquire, clock=lambda: now[0], refusal_cooldown=60)
    provider.reject(provider.token())  # tok-1 refused: renewed
    assert provider.token() == "tok-2"
    provider.reject("tok-2")  # refused as well, a moment later: kept, no refresh
    assert provider.token() == "tok-2"
    now[0] += 61
    provider.reject("tok-2")
    assert provider.token() == "tok-3"
    assert acquire.calls == [None, "tok-1", "tok-2"]


def test_a_user_name_with_a_sasl_field_separator_is_refused_for_oauth() -> None:
    with pytest.raises(ConfigurationError, match="username"):
        SmtpSettings(
            "smtp.example.test",
            587,
            "starttls",
            username="a@example.test\x01auth=Bearer other",
            oauth2_token=lambda: "tok",
        )


def test_a_server_without_oauth_is_diagnosed_before_any_token_is_fetched() -> None:
    from mailbridge.diagnosis import Category

    with FakeSmtpServer(tokens={USER: "tok-1"}, auth_mechanisms=["PLAIN", "LOGIN"]) as server:
        acquire = Counting()
        settings = server.smtp_settings(username=USER, oauth2_token=CachingTokenProvider(acquire))
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(settings)
        assert info.value.diagnosis is not None
        assert info.value.diagnosis.category is Category.AUTH_MECHANISM_UNSUPPORTED
        assert acquire.calls == []  # no refresh for a server that cannot take the token


def test_the_sqlite_store_keeps_its_file_and_wal_private_even_when_it_existed(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "tokens.sqlite3"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)  # made by the application, the umask's way
    store = SqliteTokenStore(path)
    reader = sqlite3.connect(path)  # an open connection keeps -wal and -shm in place
    try:
        reader.execute("SELECT * FROM oauth_tokens").fetchall()
        store.save("acme", "refresh-token-blob")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
    finally:
        reader.close()
    names = ("tokens.sqlite3", "tokens.sqlite3-wal", "tokens.sqlite3-shm")
    assert modes == dict.fromkeys(names, 0o600)
