"""The set-up wizard with an OAuth2 sign-in instead of a password.

`OAuthSetup` runs one of the sign-in flows of a `MicrosoftOAuth` or `GoogleOAuth`
client (`mailbridge.oauth.microsoft` / `.google`, the extras) and then proves the
login on SMTP and IMAP exactly as `setup()` does with a password.
"""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError
from ..oauth._flows import AuthorizationRequest, DeviceCode
from ..oauth._provider import CachingTokenProvider
from ._wizard import SetupResult, setup

__all__ = ["OAuthSetup"]

MAX_DEVICE_WAIT = 900.0
"""The longest a device-code sign-in is waited for (Microsoft's codes live 15 minutes)."""
MAX_CALLBACK = 8192
"""A callback URL longer than this is refused before it is parsed."""


class OAuthSetup:
    """Set up `email`'s mailbox by signing in with Microsoft or Google, then prove it.

    `client` is the application's registration: a `MicrosoftOAuth` or a
    `GoogleOAuth`; the sign-in's tokens are saved in its store under `tenant`.
    `setup_options` go to `setup()` (`want_imap`, `registry`, `resolver`,
    `ssl_context`, `allow_private`, timeouts, ...).

    Web applications use two calls, one per request: `authorization_request()`
    (redirect the browser to its `url`, keep the request in the session) and,
    when the browser comes back, `finish_authorization(request, callback_url)`.
    A command line uses `start_device_flow()` (show the code and the address)
    and `finish_device_flow()`, which waits for the sign-in (Microsoft), or
    `installed_app_login()` (Google: a browser on this machine).
    """

    def __init__(self, email: str, client: Any, *, tenant: str, **setup_options: Any) -> None:
        self.email = email
        self.client = client
        self.tenant = tenant
        self.provider = _provider_of(client)
        self.setup_options = setup_options

    # -- web applications -------------------------------------------------------------

    def authorization_request(
        self, redirect_uri: str, *, response_mode: str | None = None
    ) -> AuthorizationRequest:
        """The first call: where to send the tenant's browser (`url`); keep the request.

        Microsoft: `response_mode="form_post"` makes the callback a POST of form fields.
        """
        options = {"response_mode": response_mode} if response_mode else {}
        request: AuthorizationRequest = self.client.authorization_request(
            redirect_uri, login_hint=self.email, **options
        )
        return request

    def finish_authorization(
        self, request: AuthorizationRequest, callback: str | Mapping[str, str]
    ) -> SetupResult:
        """The second call: signs in with what the browser came back with, then proves it.

        `callback` is the callback's URL (a GET with a query string), or the fields of a
        form-post callback (Microsoft's `response_mode="form_post"`).
        """
        if isinstance(callback, str):
            if len(callback) > MAX_CALLBACK:
                raise ConfigurationError("callback", "not a callback URL of a sign-in")
            if self.provider == "google":
                self.client.finish_authorization(self.tenant, request, callback)
                return self.prove()
            fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
        elif isinstance(callback, Mapping) and self.provider == "microsoft":
            fields = {str(key): str(value)[:MAX_CALLBACK] for key, value in callback.items()}
        else:
            raise ConfigurationError("callback", "give the callback URL (or Microsoft's form)")
        return self.prove(self.client.finish_authorization(self.tenant, request, fields))

    # -- the command line -------------------------------------------------------------

    def start_device_flow(self) -> DeviceCode:
        """Begin a device-code sign-in (Microsoft): show its `message` to the user."""
        if self.provider != "microsoft":
            raise ConfigurationError(
                "oauth",
                "Google does not allow the mail scope in the device-code flow; "
                "use installed_app_login() or the web flow",
            )
        code: DeviceCode = self.client.start_device_flow(email=self.email)
        return code

    def finish_device_flow(
        self,
        code: DeviceCode,
        *,
        timeout: float = MAX_DEVICE_WAIT,
        progress: Callable[[float], object] | None = None,
    ) -> SetupResult:
        """Wait for the user to enter the code (at most `timeout` seconds, and never
        past the code's expiry), then prove the login. `progress(seconds_left)` is
        called at each poll."""
        username = self.client.finish_device_flow(
            self.tenant, code, timeout=min(timeout, MAX_DEVICE_WAIT), progress=progress
        )
        return self.prove(username)

    def installed_app_login(
        self, *, open_browser: Callable[[str], object] | None = None, timeout: float = 300.0
    ) -> SetupResult:
        """Sign in through a browser on this machine (Google), then prove the login."""
        if self.provider != "google":
            raise ConfigurationError("oauth", "use the device-code flow for Microsoft")
        self.client.installed_app_login(self.tenant, open_browser=open_browser, timeout=timeout)
        return self.prove()

    # -- proving -------------------------------------------------------------------------

    def token_provider(self, username: str | None = None) -> CachingTokenProvider:
        """The tenant's `TokenProvider`, for the settings the application keeps."""
        if self.provider == "google":
            provider: CachingTokenProvider = self.client.token_provider(self.tenant)
        else:
            provider = self.client.token_provider(self.tenant, username or None)
        return provider

    def prove(self, username: str | None = None) -> SetupResult:
        """Find the servers and prove the signed-in account's login on SMTP and IMAP.

        `username` is the account that signed in (it may differ from `email`, e.g.
        for a shared mailbox's delegate); by default `email`.
        """
        return setup(
            self.email,
            oauth2_token=self.token_provider(username),
            username=username or self.email,
            **self.setup_options,
        )

    def __repr__(self) -> str:
        return f"<OAuthSetup {self.email} via {self.provider} tenant={self.tenant!r}>"


def _provider_of(client: Any) -> str:
    """``"microsoft"`` or ``"google"``: which adapter `client` is (their extras are loaded
    when such a client exists, so nothing is imported here)."""
    for name, module, kind in (
        ("microsoft", "mailbridge.oauth.microsoft", "MicrosoftOAuth"),
        ("google", "mailbridge.oauth.google", "GoogleOAuth"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(client, getattr(loaded, kind)):
            return name
    raise TypeError("client is a mailbridge.oauth MicrosoftOAuth or GoogleOAuth")
