"""An application's own `TokenStore` that fails (its database, its disk) fails typed:
in every sign-in flow (the adapters, the wizard, `mailbridge oauth login`) and in every
renewal, each of its methods (load, save, lock, unlock) gives a `TokenStoreError` that
names the store and what it was doing, chains the original and quotes no secret."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mailbridge import Category
from mailbridge.cli import main
from mailbridge.errors import OAuthGrantInvalid, TokenStoreError
from mailbridge.oauth import MemoryTokenStore, TokenStore
from mailbridge.oauth._guarded import guarded
from mailbridge.oauth.google import GoogleOAuth
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.providers import OAuthSetup
from mailbridge.testing import FakeAuthorizationServer

from .test_oauth_setup import EMAIL, world

METHODS = ("load", "save", "lock", "unlock")
CONNECTION = "postgresql://tokens:db-password-123@db.example.test/tokens"


class BrokenStore:
    """The application's store: a MemoryTokenStore whose `broken` method raises `error`
    (its text quotes the blob and a connection string, as careless drivers do)."""

    def __init__(self, broken: str, error: Callable[[str], Exception]) -> None:
        self.inner = MemoryTokenStore()
        self.broken = broken
        self.error = error
        self.raised: list[Exception] = []
        self.blobs: list[str] = []

    def _fail(self, method: str, blob: str = "") -> None:
        if method == self.broken:
            exc = self.error(f"{CONNECTION}: cannot {method} {blob}")
            self.raised.append(exc)
            raise exc

    def load(self, tenant: str) -> str | None:
        self._fail("load")
        return self.inner.load(tenant)

    def save(self, tenant: str, blob: str) -> None:
        self.blobs.append(blob)
        self._fail("save", blob)
        self.inner.save(tenant, blob)

    def lock(self, tenant: str) -> AbstractContextManager[None]:
        return self._lock(tenant)

    @contextmanager
    def _lock(self, tenant: str) -> Iterator[None]:
        self._fail("lock")
        with self.inner.lock(tenant):
            yield
        self._fail("unlock")


ERRORS: dict[str, Callable[[str], Exception]] = {
    "RuntimeError": RuntimeError,
    "sqlite3.Error": sqlite3.OperationalError,
    "OSError": lambda text: OSError(28, "No space left on device", text),
}


def check(caught: TokenStoreError, store: BrokenStore, doing: str) -> None:
    """Typed, named, chained, and no secret in its text or repr."""
    text, shown = str(caught), repr(caught) + str(caught.diagnosis)
    assert "BrokenStore" in text and "'acme'" in text and doing in text, text
    assert caught.error == "token_store" and caught.diagnosis.hints
    assert store.raised and caught.__cause__ is store.raised[-1]
    for secret in (*store.blobs, "db-password-123", CONNECTION):
        assert secret not in text and secret not in shown
    for blob in store.blobs:  # a blob holds the refresh token: none of its tokens shows
        for token in (t for t in blob.replace('"', " ").split() if len(t) > 30):
            assert token not in text


def microsoft(auth: FakeAuthorizationServer, store: TokenStore) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        auth.public_client_id,
        store=store,
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=auth.ca_file,
    )


def google(auth: FakeAuthorizationServer, kind: str, store: TokenStore) -> GoogleOAuth:
    return GoogleOAuth(auth.google_client_config(kind), store=store, ca_file=auth.ca_file)


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(EMAIL,)) as server:
        yield server


def _doing(method: str) -> str:
    return {"load": "reading", "save": "saving", "lock": "locking", "unlock": "unlocking"}[method]


# -- sign-in: the adapters -----------------------------------------------------------------


def _microsoft_device(auth: FakeAuthorizationServer, store: TokenStore) -> None:
    ms = microsoft(auth, store)
    code = ms.start_device_flow()
    auth.approve_device_code(code.user_code)
    ms.finish_device_flow("acme", code, timeout=10)


def _microsoft_web(auth: FakeAuthorizationServer, store: TokenStore) -> None:
    ms = microsoft(auth, store)
    request = ms.authorization_request("https://app.example.test/oauth/callback")
    callback = auth.sign_in(request.url)
    query = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    ms.finish_authorization("acme", request, query)


def _google_web(auth: FakeAuthorizationServer, store: TokenStore) -> None:
    g = google(auth, "web", store)
    request = g.authorization_request("https://app.example.test/oauth/google")
    g.finish_authorization("acme", request, auth.sign_in(request.url))


def _google_installed(auth: FakeAuthorizationServer, store: TokenStore) -> None:
    browser = auth.browser()
    try:
        google(auth, "installed", store).installed_app_login(
            "acme", open_browser=browser, timeout=10
        )
    finally:
        browser.join()


SIGN_INS = {
    "microsoft-device": _microsoft_device,
    "microsoft-web": _microsoft_web,
    "google-web": _google_web,
    "google-installed": _google_installed,
}


@pytest.mark.filterwarnings("ignore:response_mode='form_post':UserWarning")
@pytest.mark.parametrize("flow", sorted(SIGN_INS))
@pytest.mark.parametrize("method", ["save", "lock", "unlock"])  # a sign-in reads nothing
def test_a_sign_in_saving_to_a_failing_store_fails_typed(
    auth: FakeAuthorizationServer,
    flow: str,
    method: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BrokenStore(method, RuntimeError)
    with caplog.at_level(logging.DEBUG), pytest.raises(TokenStoreError) as caught:
        SIGN_INS[flow](auth, store)
    check(caught.value, store, _doing(method))
    assert "db-password-123" not in caplog.text
    assert not caught.value.temporary


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_each_kind_of_database_error_is_typed(auth: FakeAuthorizationServer, kind: str) -> None:
    store = BrokenStore("save", ERRORS[kind])
    with pytest.raises(TokenStoreError) as caught:
        _microsoft_device(auth, store)
    check(caught.value, store, "saving")
    if kind == "OSError":
        assert "No space left on device" in str(caught.value)


def test_a_busy_or_unreachable_store_is_temporary(auth: FakeAuthorizationServer) -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorname = "SQLITE_BUSY"  # type: ignore[attr-defined]
    for error in (busy, TimeoutError("no answer"), ConnectionRefusedError(111, "refused")):
        store = BrokenStore("lock", lambda _text, error=error: error)  # type: ignore[misc]
        with pytest.raises(TokenStoreError) as caught:
            _microsoft_device(auth, store)
        assert caught.value.temporary, repr(error)
        assert caught.value.diagnosis.category == Category.TIMEOUT


# -- renewal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("provider", ["microsoft", "google"])
def test_a_renewal_with_a_failing_store_fails_typed(
    auth: FakeAuthorizationServer, provider: str, method: str
) -> None:
    auth.access_token_lifetime = 60  # the signed-in token is due: the renewal saves
    store = BrokenStore("", RuntimeError)
    if provider == "microsoft":
        _microsoft_device(auth, store)
        tokens = microsoft(auth, store).token_provider("acme")
    else:
        _google_web(auth, store)
        tokens = google(auth, "web", store).token_provider("acme")
    auth.access_token_lifetime = 3600
    store.broken = method
    with pytest.raises(TokenStoreError) as caught:
        tokens.token()
    check(caught.value, store, _doing(method))
    store.broken = ""  # repaired: the next call works (unless a rotation was lost)
    if method != "save":
        assert tokens.token()


def test_an_error_inside_the_lock_passes_unchanged(auth: FakeAuthorizationServer) -> None:
    auth.access_token_lifetime = 60  # the signed-in token is due: the renewal is refused
    store = BrokenStore("", RuntimeError)
    _google_web(auth, store)
    auth.revoke()
    tokens = google(auth, "web", store).token_provider("acme")
    with pytest.raises(OAuthGrantInvalid):  # the grant's error, not one of the store
        tokens.token()


def test_a_lock_that_swallows_errors_cannot_hide_ours() -> None:
    class Swallowing(BrokenStore):
        @contextmanager
        def _lock(self, tenant: str) -> Iterator[None]:
            with contextlib.suppress(Exception):  # a careless lock
                yield

    with pytest.raises(KeyError), guarded(Swallowing("", RuntimeError)).lock("acme"):
        raise KeyError("ours")


def test_bugs_are_not_disguised_and_our_stores_are_not_wrapped() -> None:
    for bug in (AssertionError, RecursionError):
        with pytest.raises(bug):
            guarded(BrokenStore("load", bug)).load("acme")
    ours = MemoryTokenStore()
    assert guarded(ours) is ours
    assert "BrokenStore" in repr(guarded(BrokenStore("", RuntimeError)))


def test_a_store_returning_no_text_is_a_typed_error() -> None:
    class Bytes(BrokenStore):
        def load(self, tenant: str) -> str | None:
            return b"blob"  # type: ignore[return-value]

    with pytest.raises(TokenStoreError, match="reading the sign-in of tenant 'acme'"):
        guarded(Bytes("", RuntimeError)).load("acme")


@pytest.mark.parametrize("provider", ["microsoft", "google"])
def test_a_store_replaced_on_the_adapter_is_the_one_used(
    auth: FakeAuthorizationServer, provider: str
) -> None:
    # `store` is the adapter's public attribute: the guard must follow it, not keep
    # the store the adapter was made with.
    first, second = MemoryTokenStore(), BrokenStore("", RuntimeError)
    if provider == "microsoft":
        adapter: MicrosoftOAuth | GoogleOAuth = microsoft(auth, first)
        adapter.store = second
        code = adapter.start_device_flow()
        auth.approve_device_code(code.user_code)
        adapter.finish_device_flow("acme", code, timeout=10)
    else:
        adapter = google(auth, "web", first)
        adapter.store = second
        request = adapter.authorization_request("https://app.example.test/oauth/google")
        adapter.finish_authorization("acme", request, auth.sign_in(request.url))
    kept_by_first, kept_by_second = first.load("acme") is not None, bool(second.load("acme"))
    assert not kept_by_first and kept_by_second  # never a token in the output
    second.broken = "load"  # and it is still guarded: its failure is typed
    with pytest.raises(TokenStoreError) as caught:
        adapter.token_provider("acme").token()
    check(caught.value, second, "reading")


# -- the wizard and the command line ---------------------------------------------------------


@pytest.mark.parametrize("method", ["save", "lock", "unlock"])
def test_the_wizards_device_sign_in_fails_typed(method: str) -> None:
    with world() as w:
        store = BrokenStore(method, OSError)
        ms = microsoft(w.auth, store)
        wizard = OAuthSetup(EMAIL, ms, tenant="acme", **w.options())
        code = wizard.start_device_flow()
        approve = threading.Timer(0.2, w.auth.approve_device_code, (code.user_code,))
        approve.start()
        try:
            with pytest.raises(TokenStoreError) as caught:
                wizard.finish_device_flow(code, timeout=20)
        finally:
            approve.cancel()
            approve.join()
        check(caught.value, store, _doing(method))


def test_the_wizards_proof_reports_a_store_that_cannot_be_read() -> None:
    with world() as w:
        store = BrokenStore("", RuntimeError)
        wizard = OAuthSetup(EMAIL, microsoft(w.auth, store), tenant="acme", **w.options())
        code = wizard.start_device_flow()
        w.auth.approve_device_code(code.user_code)
        username = wizard.client.finish_device_flow("acme", code, timeout=10)
        store.broken = "load"
        result = wizard.prove(username)
    assert not result.ok and result.diagnosis is not None
    assert "could not be read or written" in result.diagnosis.summary
    assert "db-password-123" not in str(result)


def test_oauth_login_with_a_failing_store_is_one_clean_line(
    auth: FakeAuthorizationServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mailbridge.oauth

    class Full(mailbridge.oauth.SqliteTokenStore):  # an operator's own subclass of the store
        def save(self, tenant: str, blob: str) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(mailbridge.oauth, "SqliteTokenStore", Full)
    timer = threading.Timer(0.5, auth.approve_device_code)
    timer.start()
    try:
        code = main(["oauth", "login", "--provider", "microsoft", "--tenant", "acme",
                     "--client-id", auth.public_client_id, "--authority", auth.authority(),
                     "--oauth-ca-file", str(auth.ca_file), "--token-db",
                     str(tmp_path / "t.db"), "--wait", "20"])  # fmt: skip
    finally:
        timer.cancel()
        timer.join()
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert "saving the sign-in of tenant 'acme'" in err and "No space left on device" in err
    assert "Signed in" not in out
