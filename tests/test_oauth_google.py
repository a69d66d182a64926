"""google-auth and google-auth-oauthlib, for real, against FakeAuthorizationServer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.errors import OAuthError, OAuthGrantInvalid
from mailbridge.oauth import MemoryTokenStore, TokenProvider
from mailbridge.oauth.google import GoogleOAuth
from mailbridge.smtp import SmtpConnection
from mailbridge.testing import FakeAuthorizationServer, FakeSmtpServer

USER = "bob@example.test"


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(USER,)) as server:
        yield server


@pytest.fixture
def smtp(auth: FakeAuthorizationServer) -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(authorization_server=auth) as server:
        yield server


def google(auth: FakeAuthorizationServer, kind: str, store: MemoryTokenStore) -> GoogleOAuth:
    return GoogleOAuth(auth.google_client_config(kind), store=store, ca_file=auth.ca_file)


def web_login(auth: FakeAuthorizationServer, g: GoogleOAuth, tenant: str) -> None:
    request = g.authorization_request("https://app.example.test/oauth/google")
    g.finish_authorization(tenant, request, auth.sign_in(request.url))


def send_one(smtp: FakeSmtpServer, provider: TokenProvider) -> None:
    settings = smtp.smtp_settings(username=USER, oauth2_token=provider)
    with DeliveryClient.own_smtp(USER, settings) as client:
        client.send(DocumentEmail(to="r@example.test", subject="Invoice", body="Attached."))


def test_installed_app_flow_through_a_loopback_redirect(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    store = MemoryTokenStore()
    g = google(auth, "installed", store)
    browser = auth.browser()
    g.installed_app_login("acme", open_browser=browser, timeout=10)
    browser.join()
    assert browser.errors == []
    assert "access_type=offline" in browser.opened[0] and "code_challenge=" in browser.opened[0]
    blob = json.loads(store.load("acme") or "{}")
    assert set(blob) == {"token", "refresh_token", "expiry"}  # no client secret, no endpoint
    send_one(smtp, g.token_provider("acme"))
    assert smtp.messages[0].user == USER
    assert auth.refreshes == 0


def test_installed_app_flow_nobody_completes_times_out(auth: FakeAuthorizationServer) -> None:
    g = google(auth, "installed", MemoryTokenStore())
    opened: list[str] = []
    with pytest.raises(OAuthError) as info:
        g.installed_app_login("acme", open_browser=opened.append, timeout=1)
    assert info.value.error == "timeout" and len(opened) == 1


def test_web_flow_in_two_requests(auth: FakeAuthorizationServer, smtp: FakeSmtpServer) -> None:
    store = MemoryTokenStore()
    g = google(auth, "web", store)
    request = g.authorization_request("https://app.example.test/oauth/google", login_hint=USER)
    assert "code_verifier" not in repr(request)
    callback = auth.sign_in(request.url)  # the browser comes back to the application
    g.finish_authorization("acme", request, callback)
    send_one(smtp, g.token_provider("acme"))
    assert len(smtp.messages) == 1


def test_a_callback_with_another_state_is_refused(auth: FakeAuthorizationServer) -> None:
    g = google(auth, "web", MemoryTokenStore())
    first = g.authorization_request("https://app.example.test/oauth/google")
    second = g.authorization_request("https://app.example.test/oauth/google")
    with pytest.raises(OAuthError) as info:
        g.finish_authorization("acme", first, auth.sign_in(second.url))
    assert info.value.provider == "google"


def test_refresh_before_expiry_and_after_a_refusal(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    auth.access_token_lifetime = 120  # under the 5-minute margin: renewed at once
    g = google(auth, "web", MemoryTokenStore())
    web_login(auth, g, "acme")
    auth.access_token_lifetime = 3600
    provider = g.token_provider("acme")
    first = provider.token()
    assert auth.refreshes == 1 and auth.accepts(USER, first)
    assert provider.token() == first and auth.refreshes == 1
    auth.expire_access_tokens()  # the server refuses it; the client cannot know
    send_one(smtp, provider)
    assert smtp.oauth_refused == 1 and auth.refreshes == 2
    assert auth.valid_refresh_tokens() == 1  # the rotated refresh token was saved


def test_two_threads_refreshing_at_once_rotate_once(auth: FakeAuthorizationServer) -> None:
    store = MemoryTokenStore()
    auth.access_token_lifetime = 60
    web_login(auth, google(auth, "web", store), "acme")
    auth.access_token_lifetime = 3600
    workers = [google(auth, "web", store).token_provider("acme") for _ in range(2)]
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
    assert auth.refreshes == 1 and auth.valid_refresh_tokens() == 1


def test_a_revoked_grant_is_a_typed_error_without_a_retry_loop(
    auth: FakeAuthorizationServer, smtp: FakeSmtpServer
) -> None:
    g = google(auth, "web", MemoryTokenStore())
    web_login(auth, g, "acme")
    provider = g.token_provider("acme")
    provider.token()
    auth.revoke()
    before = auth.token_requests
    with pytest.raises(OAuthGrantInvalid) as info:
        SmtpConnection.open(smtp.smtp_settings(username=USER, oauth2_token=provider))
    assert info.value.provider == "google" and info.value.error == "invalid_grant"
    assert "expired or revoked" in info.value.description
    assert auth.token_requests - before == 1 and smtp.oauth_refused == 1


def test_a_sign_in_never_stored_is_a_typed_error(auth: FakeAuthorizationServer) -> None:
    with pytest.raises(OAuthGrantInvalid):
        google(auth, "web", MemoryTokenStore()).token_provider("nobody").token()
    assert auth.token_requests == 0


def test_a_revoked_grant_is_not_asked_for_again(auth: FakeAuthorizationServer) -> None:
    g = google(auth, "web", MemoryTokenStore())
    web_login(auth, g, "acme")
    provider = g.token_provider("acme")
    provider.token()
    auth.revoke()
    for _ in range(3):  # every message of a batch would ask
        provider.invalidate()
        with pytest.raises(OAuthGrantInvalid):
            provider.token()
    assert auth.token_requests == 2  # the code, then one refresh: msal does the same


def test_debug_logs_of_sign_in_and_refresh_hold_no_token_code_or_secret(
    auth: FakeAuthorizationServer, caplog: pytest.LogCaptureFixture
) -> None:
    import base64
    import logging
    from urllib.parse import parse_qs, urlsplit

    caplog.set_level(logging.DEBUG)
    store = MemoryTokenStore()
    g = google(auth, "web", store)
    request = g.authorization_request("https://app.example.test/oauth/google")
    callback = auth.sign_in(request.url)
    g.finish_authorization("acme", request, callback)
    signed_in = json.loads(store.load("acme") or "{}")
    provider = g.token_provider("acme")
    provider.token()
    provider.invalidate()
    provider.token()  # a refresh
    refreshed = json.loads(store.load("acme") or "{}")
    assert auth.refreshes == 1 and "requests_oauthlib" in caplog.text
    basic = base64.b64encode(f"{auth.client_id}:{auth.client_secret}".encode()).decode()
    secrets = [
        parse_qs(urlsplit(callback).query)["code"][0],
        request.data["code_verifier"],
        auth.client_secret,
        basic,
        *(blob[key] for blob in (signed_in, refreshed) for key in ("token", "refresh_token")),
    ]
    assert [secret[:4] for secret in secrets if secret in caplog.text] == []


@pytest.mark.parametrize("blob", ["{not json", "[]", '{"token": 5, "expiry": "soon"}'])
def test_an_unreadable_stored_sign_in_is_a_typed_grant_error(
    auth: FakeAuthorizationServer, blob: str
) -> None:
    store = MemoryTokenStore()
    store.save("acme", blob)
    with pytest.raises(OAuthGrantInvalid, match="invalid_grant"):
        google(auth, "web", store).token_provider("acme").token()
