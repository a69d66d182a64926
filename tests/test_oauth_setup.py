"""The set-up wizard with OAuth2: msal and google-auth against the fake authorization server,
then the login proved on the fake SMTP and IMAP servers, which take only its tokens."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mailbridge import Category, Security
from mailbridge.errors import OAuthError
from mailbridge.oauth import MemoryTokenStore
from mailbridge.oauth.google import GoogleOAuth
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.providers import (
    Endpoint,
    OAuth2Info,
    OAuthSetup,
    Provider,
    ProviderRegistry,
)
from mailbridge.providers._wizard import setup
from mailbridge.testing import (
    FakeAuthorizationServer,
    FakeDnsServer,
    FakeImapServer,
    FakeSmtpServer,
)

EMAIL = "anna@acme.example"
MS_SCOPES = (
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
)


class World:
    """The fake authorization server, SMTP and IMAP servers, DNS and a provider preset."""

    def __init__(self, auth: FakeAuthorizationServer, smtp: FakeSmtpServer, imap: FakeImapServer):
        self.auth, self.smtp, self.imap = auth, smtp, imap
        self.dns = FakeDnsServer({"acme.example": {}})
        acme = Provider(
            id="acme",
            name="Acme Mail",
            domains=("acme.example",),
            smtp=(Endpoint("localhost", smtp.port, Security.IMPLICIT_TLS),),
            imap=(Endpoint("localhost", imap.port, Security.IMPLICIT_TLS),),
            auth=("oauth2",),
            oauth2=OAuth2Info("login.acme.example", MS_SCOPES),
        )
        self.registry = ProviderRegistry.default().register(acme)
        context = ssl.create_default_context()
        for server in (smtp, imap):
            context.load_verify_locations(cafile=str(server.ca_file))
        self.context = context

    def options(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "resolver": self.dns.resolver(timeout=0.5),
            "ssl_context": self.context,
            "allow_private": True,  # the fake servers are on loopback
            "guess": False,
            "timeout": 5,
            "command_timeout": 3,
        }

    def microsoft(self) -> MicrosoftOAuth:
        return MicrosoftOAuth(
            self.auth.public_client_id,
            store=MemoryTokenStore(),
            authority=self.auth.authority(),
            instance_discovery=False,
            ca_file=self.auth.ca_file,
        )


@contextmanager
def world() -> Iterator[World]:
    with (
        FakeAuthorizationServer(users=(EMAIL,)) as auth,
        FakeSmtpServer(tls="implicit", authorization_server=auth) as smtp,
        FakeImapServer(tls="implicit", users={}, authorization_server=auth) as imap,
    ):
        here = World(auth, smtp, imap)
        here.dns.start()
        try:
            yield here
        finally:
            here.dns.stop()


def test_device_code_sign_in_then_smtp_and_imap_proved() -> None:
    with world() as w:
        wizard = OAuthSetup(EMAIL, w.microsoft(), tenant="acme", **w.options())
        code = wizard.start_device_flow()
        assert code.user_code in code.message and code.verification_uri in code.message
        left: list[float] = []
        approve = threading.Timer(
            0.3, w.auth.approve_device_code, kwargs={"user_code": code.user_code}
        )
        approve.start()
        try:
            result = wizard.finish_device_flow(code, timeout=20, progress=left.append)
        finally:
            approve.cancel()
            approve.join()
        assert result.ok, str(result)
        assert result.smtp is not None and result.smtp.username == EMAIL
        assert result.smtp.oauth2_token is not None and result.imap is not None
        assert left and all(0 < s <= 20 for s in left)
        with result.client() as client:  # the settings that worked keep working
            assert client.test_connection().ok


def test_web_flow_is_two_calls() -> None:
    with world() as w:
        client = MicrosoftOAuth(
            w.auth.client_id,
            store=MemoryTokenStore(),
            client_secret=w.auth.client_secret,
            authority=w.auth.authority(),
            instance_discovery=False,
            ca_file=w.auth.ca_file,
        )
        wizard = OAuthSetup(EMAIL, client, tenant="acme", **w.options())
        request = wizard.authorization_request("https://app.example/oauth/callback")
        assert request.url.startswith(w.auth.url)
        # ... the browser signs in and comes back to the application's callback:
        callback = w.auth.sign_in(request.url)
        assert callback.startswith("https://app.example/oauth/callback?")
        result = wizard.finish_authorization(request, callback)
        assert result.ok, str(result)
        # msal's advice: the code comes back as a form POST, not in the URL.
        request = wizard.authorization_request(
            "https://app.example/oauth/callback", response_mode="form_post"
        )
        action, form = w.auth.sign_in_form(request.url)
        assert action == "https://app.example/oauth/callback" and "code" in form
        assert wizard.finish_authorization(request, form).ok


def test_google_installed_app_flow() -> None:
    with world() as w:
        google = GoogleOAuth(
            w.auth.google_client_config("installed"),
            store=MemoryTokenStore(),
            ca_file=w.auth.ca_file,
        )
        wizard = OAuthSetup(EMAIL, google, tenant="acme", **w.options())
        with pytest.raises(Exception, match="device-code"):
            wizard.start_device_flow()  # Google does not allow the mail scope there
        browser = w.auth.browser()
        result = wizard.installed_app_login(open_browser=browser, timeout=20)
        browser.join()
        assert result.ok, str(result)


def test_a_forged_callback_is_refused_with_a_diagnosis() -> None:
    with world() as w:
        wizard = OAuthSetup(EMAIL, w.microsoft(), tenant="acme", **w.options())
        request = wizard.authorization_request("http://127.0.0.1:9/callback")
        with pytest.raises(OAuthError) as info:
            wizard.finish_authorization(request, "http://127.0.0.1:9/callback?code=x&state=forged")
        assert info.value.diagnosis.summary


def test_consent_missing_is_diagnosed() -> None:
    with world() as w:
        w.auth.require_consent = True
        wizard = OAuthSetup(EMAIL, w.microsoft(), tenant="acme", **w.options())
        code = wizard.start_device_flow()
        w.auth.approve_device_code()
        with pytest.raises(OAuthError) as info:
            wizard.finish_device_flow(code, timeout=20)
        assert info.value.diagnosis.category == Category.OAUTH_CONSENT_REQUIRED


def test_a_token_goes_only_where_oauth2_is_expected() -> None:
    with world() as w:
        password_only = Provider(
            id="acme",
            name="Acme Mail",
            domains=("acme.example",),
            smtp=(Endpoint("localhost", w.smtp.port, Security.IMPLICIT_TLS),),
        )
        options = {**w.options(), "registry": ProviderRegistry.default().register(password_only)}
        asked: list[int] = []
        result = setup(EMAIL, oauth2_token=lambda: str(asked.append(1)), want_imap=False, **options)
    assert not result.ok and result.attempts == ()
    assert not asked  # the token was never even fetched
    assert result.diagnosis is not None
    assert result.diagnosis.category == Category.AUTH_MECHANISM_UNSUPPORTED


def test_password_or_token_not_both() -> None:
    from mailbridge import ConfigurationError

    with pytest.raises(ConfigurationError):
        setup(EMAIL, "pw", oauth2_token=lambda: "t")
    with pytest.raises(ConfigurationError):
        setup(EMAIL)


def test_the_setup_result_offers_oauth_where_the_provider_does() -> None:
    with world() as w:
        result = setup(EMAIL, "not-a-password", want_imap=False, **w.options())
    assert not result.ok
    assert result.oauth2 is not None and result.oauth2.scopes == MS_SCOPES


def test_setup_with_a_token_provider_and_a_dead_sign_in() -> None:
    from mailbridge import MailbridgeError

    with world() as w:
        microsoft = w.microsoft()
        code = microsoft.start_device_flow()
        w.auth.approve_device_code()
        username = microsoft.finish_device_flow("acme", code, timeout=20)
        provider = microsoft.token_provider("acme", username)
        with setup(EMAIL, oauth2_token=provider, **w.options()).client() as client:
            assert client.imap is not None and client.test_connection().ok
        w.auth.revoke()
        provider.invalidate()
        result = setup(EMAIL, oauth2_token=provider, **w.options())
        with pytest.raises(MailbridgeError, match="expired or revoked"):
            result.client()
    assert len(result.attempts) == 1  # a dead sign-in: IMAP (or another server) is not tried
    assert result.diagnosis is not None
    assert result.diagnosis.category == Category.OAUTH_GRANT_INVALID
