"""msal, for real, against FakeAuthorizationServer: every flow, silent renewal, rotation once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mailbridge import AuthenticationError, DeliveryClient, DocumentEmail, send_many
from mailbridge.errors import OAuthConsentRequired, OAuthError, OAuthGrantInvalid
from mailbridge.imap._connection import close_imap, open_imap
from mailbridge.oauth import MemoryTokenStore, SqliteTokenStore, TokenProvider, TokenStore
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.smtp import SmtpConnection
from mailbridge.testing import FakeAuthorizationServer, FakeImapServer, FakeSmtpServer

USER = "alice@example.test"
SRC = str(Path(__file__).resolve().parents[1] / "src")
# msal recommends response_mode="form_post" (MicrosoftOAuth.authorization_request takes it);
# the fake's browser follows query redirects.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post':UserWarning")


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(USER,)) as server:
        yield server


@pytest.fixture
def smtp(auth: FakeAuthorizationServer) -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(authorization_server=auth) as server:
        yield server


def public(auth: FakeAuthorizationServer, store: TokenStore) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        auth.public_client_id,
        store=store,
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=auth.ca_file,
    )


def confidential(auth: FakeAuthorizationServer, store: TokenStore) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        auth.client_id,
        client_secret=auth.client_secret,
        store=store,
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=auth.ca_file,
    )


def device_login(auth: FakeAuthorizationServer, ms: MicrosoftOAuth, tenant: str) -> str:
    code = ms.start_device_flow()
    auth.approve_device_code(code.user_code)
    return ms.finish_device_flow(tenant, code, timeout=10)


def web_login(auth: FakeAuthorizationServer, ms: MicrosoftOAuth, tenant: str) -> str:
    request = ms.authorization_request("https://app.example.test/oauth/callback")
    callback = auth.sign_in(request.url)
    query = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    return ms.finish_authorization(tenant, request, query)


def invoice(n: int = 0) -> DocumentEmail:
    return DocumentEmail(to=f"r{n}@example.test", subject=f"Invoice {n}", body="Attached.")


def send_one(smtp: FakeSmtpServer, provider: TokenProvider) -> None:
    settings = smtp.smtp_settings(username=USER, oauth2_token=provider)
    with DeliveryClient.own_smtp(USER, settings) as client:
        client.send(invoice())


# -- the flows ---------------------------------------------------------------------------


def test_device_code_flow_of_a_public_client_waits_while_authorization_is_pending(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    auth.device_pending_polls = 1  # the first poll after approval still says pending
    ms = public(auth, MemoryTokenStore())
    code = ms.start_device_flow()
    assert code.user_code in code.message and code.verification_uri.startswith(auth.url)
    assert "device_code" not in repr(code)
    auth.approve_device_code(code.user_code)
    seen: list[float] = []
    started = time.monotonic()
    assert ms.finish_device_flow("acme", code, timeout=10, progress=seen.append) == USER
    assert time.monotonic() - started < 5 and seen  # polled again after the pending answer
    send_one(smtp, ms.token_provider("acme"))
    assert smtp.messages[0].user == USER


def test_a_device_code_nobody_enters_ends_at_the_time_out(auth: FakeAuthorizationServer) -> None:
    ms = public(auth, MemoryTokenStore())
    code = ms.start_device_flow()
    started = time.monotonic()
    with pytest.raises(OAuthError) as info:
        ms.finish_device_flow("acme", code, timeout=1.5)
    assert info.value.error == "authorization_pending"
    assert time.monotonic() - started < 4


def test_the_device_code_flow_is_refused_to_a_confidential_client(
    auth: FakeAuthorizationServer,
) -> None:
    with pytest.raises(ValueError, match="public"):
        confidential(auth, MemoryTokenStore()).start_device_flow()


def test_authorization_code_flow_of_a_public_client_with_pkce(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    ms = public(auth, MemoryTokenStore())
    request = ms.authorization_request("http://127.0.0.1:8400/callback", login_hint=USER)
    assert "code_challenge=" in request.url and "code_verifier" not in repr(request)
    callback = auth.sign_in(request.url)
    query = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    assert ms.finish_authorization("acme", request, query) == USER
    send_one(smtp, ms.token_provider("acme", USER))
    assert len(smtp.messages) == 1


def test_authorization_code_flow_of_a_confidential_web_client(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    store = MemoryTokenStore()
    ms = confidential(auth, store)
    assert web_login(auth, ms, "acme") == USER
    blob = store.load("acme")
    assert blob is not None and auth.client_secret not in blob
    assert auth.client_secret not in repr(ms)
    send_one(smtp, ms.token_provider("acme"))
    assert len(smtp.messages) == 1


def test_authorization_code_flow_with_form_post(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    ms = confidential(auth, MemoryTokenStore())
    request = ms.authorization_request(
        "https://app.example.test/oauth/callback", response_mode="form_post"
    )
    assert "response_mode=form_post" in request.url
    action, form = auth.sign_in_form(request.url)
    assert action == "https://app.example.test/oauth/callback" and set(form) == {"code", "state"}
    assert ms.finish_authorization("acme", request, form) == USER
    send_one(smtp, ms.token_provider("acme"))
    assert len(smtp.messages) == 1


def test_a_wrong_client_secret_is_a_typed_error(auth: FakeAuthorizationServer) -> None:
    ms = MicrosoftOAuth(
        auth.client_id,
        client_secret="not-the-secret",
        store=MemoryTokenStore(),
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=auth.ca_file,
    )
    with pytest.raises(OAuthError) as info:
        web_login(auth, ms, "acme")
    assert info.value.error == "invalid_client" and info.value.error_codes == (7000215,)
    assert "not-the-secret" not in str(info.value)


def test_missing_consent_is_its_own_error(auth: FakeAuthorizationServer) -> None:
    auth.require_consent = True
    with pytest.raises(OAuthConsentRequired) as info:
        web_login(auth, confidential(auth, MemoryTokenStore()), "acme")
    assert info.value.error_codes == (65001,) and info.value.provider == "microsoft"


def test_a_forged_callback_state_is_refused(auth: FakeAuthorizationServer) -> None:
    ms = confidential(auth, MemoryTokenStore())
    request = ms.authorization_request("https://app.example.test/oauth/callback")
    with pytest.raises(OAuthError) as info:
        ms.finish_authorization("acme", request, {"code": "x", "state": "forged"})
    assert info.value.error == "invalid_state"


def test_the_ca_is_verified(auth: FakeAuthorizationServer, tmp_path: Path) -> None:
    with FakeAuthorizationServer() as other:  # another CA: the certificate is not trusted
        ms = MicrosoftOAuth(
            auth.public_client_id,
            store=MemoryTokenStore(),
            authority=auth.authority(),
            instance_discovery=False,
            ca_file=other.ca_file,
        )
        with pytest.raises(OAuthError) as info:
            ms.start_device_flow()
    assert info.value.temporary and info.value.error == "unreachable"


# -- silent renewal --------------------------------------------------------------------------


def test_tokens_come_from_the_cache_until_they_near_expiry(
    auth: FakeAuthorizationServer,
) -> None:
    store = MemoryTokenStore()
    ms = public(auth, store)
    device_login(auth, ms, "acme")
    first = ms.token_provider("acme").token()
    assert ms.token_provider("acme").token() == first  # a new worker: from the stored cache
    assert auth.refreshes == 0
    auth.access_token_lifetime = 120  # under msal's and our 5-minute margin
    provider = ms.token_provider("acme")
    assert provider.token() == first
    provider.invalidate()  # the server refused it: the next one is new
    second = provider.token()
    assert second != first and auth.refreshes == 1
    third = provider.token()  # 120 s left: kept for half its life, not renewed per call
    assert third == second and auth.refreshes == 1


def test_two_threads_refreshing_at_once_rotate_the_refresh_token_once(
    auth: FakeAuthorizationServer,
) -> None:
    store = MemoryTokenStore()
    ms = public(auth, store)
    auth.access_token_lifetime = 60  # the signed-in token is already due for renewal
    device_login(auth, ms, "acme")
    auth.access_token_lifetime = 3600
    workers = [ms.token_provider("acme") for _ in range(2)]  # two workers, one store
    barrier = threading.Barrier(2)
    tokens: list[str] = []

    def work(provider: TokenProvider) -> None:
        barrier.wait(5)
        tokens.append(provider.token())

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(tokens) == 2 and tokens[0] == tokens[1]
    assert auth.refreshes == 1  # the second worker found the first one's token in the store
    assert auth.valid_refresh_tokens() == 1  # and the rotated refresh token was kept


def test_two_processes_with_the_sqlite_store_rotate_the_refresh_token_once(
    auth: FakeAuthorizationServer, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.sqlite3"
    auth.access_token_lifetime = 60
    device_login(auth, public(auth, SqliteTokenStore(path)), "acme")
    auth.access_token_lifetime = 3600
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from mailbridge.oauth import SqliteTokenStore
        from mailbridge.oauth.microsoft import MicrosoftOAuth
        ms = MicrosoftOAuth({auth.public_client_id!r}, store=SqliteTokenStore({str(path)!r}),
                            authority={auth.authority()!r}, instance_discovery=False,
                            ca_file={str(auth.ca_file)!r})
        provider = ms.token_provider("acme")
        deadline = time.monotonic() + 20
        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(provider.token()[:12])
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(1.0)  # both imported msal and read the authority
    go.touch()
    outputs = [worker.communicate(timeout=30)[0].strip() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert outputs[0] == outputs[1]  # the same (shortened) token: one refreshed, one read it
    assert auth.refreshes == 1 and auth.valid_refresh_tokens() == 1


def test_an_expired_token_mid_batch_is_renewed_and_the_batch_goes_on(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    ms = public(auth, MemoryTokenStore())
    device_login(auth, ms, "acme")
    provider = ms.token_provider("acme")
    smtp.messages_per_connection = 3  # every fourth message needs a new connection and AUTH
    settings = smtp.smtp_settings(username=USER, oauth2_token=provider)
    with DeliveryClient.own_smtp(USER, settings) as client:
        outcomes = []
        for outcome in send_many(((client, invoice(n)) for n in range(9)), concurrency=1):
            outcomes.append(outcome)
            if len(outcomes) == 3:
                auth.expire_access_tokens()  # the server no longer takes the cached token
    assert all(outcome.ok for outcome in outcomes) and len(outcomes) == 9
    assert sorted(m.message["Subject"] for m in smtp.messages) == [f"Invoice {n}" for n in range(9)]
    assert smtp.oauth_refused >= 1
    assert auth.refreshes == smtp.oauth_refused  # each refusal: one renewal, one retry


def test_a_revoked_refresh_token_is_a_typed_error_without_a_retry_loop(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    ms = public(auth, MemoryTokenStore())
    device_login(auth, ms, "acme")
    provider = ms.token_provider("acme")
    provider.token()
    auth.revoke(USER)  # access and refresh tokens: the admin revoked the sessions
    before = auth.token_requests
    settings = smtp.smtp_settings(username=USER, oauth2_token=provider)
    with pytest.raises(OAuthGrantInvalid) as info:
        SmtpConnection.open(settings)
    assert isinstance(info.value, AuthenticationError) and not info.value.temporary
    assert info.value.error == "invalid_grant" and info.value.error_codes == (70008,)
    assert auth.token_requests - before == 1  # one refresh attempt, then the error
    assert smtp.oauth_refused == 1


def test_imap_renews_a_refused_token_once(auth: FakeAuthorizationServer) -> None:
    ms = public(auth, MemoryTokenStore())
    device_login(auth, ms, "acme")
    provider = ms.token_provider("acme")
    provider.token()
    auth.expire_access_tokens()
    with FakeImapServer(users={}, authorization_server=auth) as imap:
        settings = imap.imap_settings(username=USER, oauth2_token=provider)
        close_imap(open_imap(settings))
        assert imap.oauth_refused == 1
    assert auth.refreshes == 1


def test_no_token_reaches_the_logs(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    store = MemoryTokenStore()
    ms = public(auth, store)
    device_login(auth, ms, "acme")
    provider = ms.token_provider("acme")
    send_one(smtp, provider)
    access = provider.token()
    blob = store.load("acme") or ""
    secrets = re.findall(r'"secret": "([^"]+)"', blob)  # msal's cache: tokens as "secret"
    assert len(secrets) >= 2 and access in secrets
    logged = caplog.text
    assert not [secret for secret in secrets if secret in logged]


def test_a_batch_after_revocation_fails_typed_with_one_refresh_attempt(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    ms = public(auth, MemoryTokenStore())
    device_login(auth, ms, "acme")
    provider = ms.token_provider("acme")
    provider.token()
    auth.revoke(USER)
    before = auth.token_requests
    settings = smtp.smtp_settings(username=USER, oauth2_token=provider)
    with DeliveryClient.own_smtp(USER, settings) as client:
        outcomes = list(send_many(((client, invoice(n)) for n in range(5)), concurrency=1))
    assert [type(outcome.error) for outcome in outcomes] == [OAuthGrantInvalid] * 5
    assert auth.token_requests - before == 1  # msal drops the dead refresh token
    assert smtp.messages == []


def test_debug_logs_of_sign_in_and_refresh_hold_no_token_code_or_secret(
    auth: FakeAuthorizationServer, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    caplog.set_level(logging.DEBUG)
    store = MemoryTokenStore()
    ms = confidential(auth, store)
    request = ms.authorization_request("https://app.example.test/oauth/callback")
    callback = auth.sign_in(request.url)
    query = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    ms.finish_authorization("acme", request, query)
    blobs = [store.load("acme") or ""]
    provider = ms.token_provider("acme")
    provider.token()
    provider.invalidate()
    provider.token()  # a refresh through acquire_token_silent
    blobs.append(store.load("acme") or "")
    device = public(auth, store)
    code = device.start_device_flow()
    auth.approve_device_code(code.user_code)
    device.finish_device_flow("other", code, timeout=10)
    blobs.append(store.load("other") or "")
    assert auth.refreshes == 1 and "msal.token_cache" in caplog.text
    secrets = [
        query["code"],
        request.data["code_verifier"],
        code.data["device_code"],
        auth.client_secret,
        *(
            entry["secret"]
            for blob in blobs
            for kind in ("AccessToken", "RefreshToken", "IdToken")
            for entry in json.loads(blob)[kind].values()
        ),
    ]
    assert [secret[:4] for secret in secrets if secret in caplog.text] == []


@pytest.mark.parametrize("blob", ["{not json", "[]", '{"Account": {"x": 5}}'])
def test_an_unreadable_stored_sign_in_is_a_typed_grant_error(
    auth: FakeAuthorizationServer, blob: str
) -> None:
    from mailbridge.errors import OAuthGrantInvalid

    store = MemoryTokenStore()
    store.save("acme", blob)
    with pytest.raises(OAuthGrantInvalid, match="invalid_grant"):
        confidential(auth, store).token_provider("acme").token()
