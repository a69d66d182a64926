"""Google (Gmail, Google Workspace) sign-in and tokens through google-auth (`mailbridge[google]`).

google-auth-oauthlib runs Google's installed-app (loopback redirect) and web
flows with PKCE; google-auth's `Credentials` refreshes the token. They are
Google's own libraries, so their quirks (offline access, consent prompts, error
bodies) are handled where Google maintains them; mailbridge keeps each tenant's
credentials (without the client secret) in a `TokenStore`.
"""

from __future__ import annotations

import calendar
import datetime
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from .._distribution import install_hint
from ..errors import OAuthGrantInvalid
from ._circuit import DEFAULT_BACKOFF
from ._errors import oauth_error, stored_sign_in_unreadable, token_endpoint_unreachable
from ._flows import AuthorizationRequest
from ._guarded import guarded
from ._provider import DEFAULT_MARGIN, AccessToken, CachingTokenProvider
from ._store import TokenStore

try:
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.credentials
    import google_auth_oauthlib.flow
    import oauthlib.oauth2
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by the install check
    raise ImportError(
        f"mailbridge.oauth.google needs google-auth and google-auth-oauthlib "
        f"({exc.name} is missing): {install_hint('google')}",
        name=__name__,
    ) from exc

from ._http import checked_ca_file, http_session
from ._redact import scrub_loggers

__all__ = ["SCOPE", "GoogleOAuth"]

# requests-oauthlib logs the token request and response (tokens, code, Basic credentials).
scrub_loggers(("requests_oauthlib.oauth2_session", "google_auth_oauthlib.flow"))

SCOPE = "https://mail.google.com/"  # the only scope Gmail's IMAP and SMTP accept
PROVIDER = "google"


class GoogleOAuth:
    """One OAuth client from Google Cloud's console, its sign-in flows and tokens.

    `client_config` is the JSON the console downloads (`{"installed": {...}}` for a
    desktop app, `{"web": {...}}` for a web application); its `auth_uri` and
    `token_uri` say where Google (or a test server) is. `ca_file` replaces the
    system trust store.
    After a network failure at the authorization server (refused, time-out, 5xx),
    token renewals fail fast with `OAuthUnavailable` for `backoff=(first, maximum)`
    seconds, the window doubling per failure; a token provider keeps handing out its
    cached access token meanwhile while that token has not expired.
    """

    def __init__(
        self,
        client_config: Mapping[str, Any],
        *,
        store: TokenStore,
        scopes: Sequence[str] = (SCOPE,),
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
    ) -> None:
        kinds = [kind for kind in ("installed", "web") if kind in client_config]
        if not kinds:
            raise ValueError("client_config needs an 'installed' or a 'web' section")
        self.kind = kinds[0]
        self._config = {self.kind: dict(client_config[self.kind])}
        self.client_id = str(self._config[self.kind]["client_id"])
        self.store = store
        self.scopes = list(scopes)
        self._ca_file = checked_ca_file(ca_file)
        self._session = http_session(self._ca_file, timeout, PROVIDER, backoff)

    # -- installed app: a loopback redirect on this machine ----------------------------------

    def installed_app_login(
        self,
        tenant: str,
        *,
        open_browser: Callable[[str], object] | None = None,
        timeout: float = 300.0,
    ) -> None:
        """Sign in through the browser on this machine and save the tenant's tokens.

        A server on 127.0.0.1 (a free port) receives the redirect. `open_browser(url)`
        replaces the system browser (and the printed prompt).
        """
        flow = _InstalledAppFlow.from_client_config(self._config, self.scopes)
        flow.ca_file = self._ca_file
        flow.on_url = open_browser
        with _failures("the Google sign-in", self._token_host):
            credentials = flow.run_local_server(
                host="127.0.0.1",
                port=0,
                open_browser=open_browser is None,
                authorization_prompt_message=None
                if open_browser is not None
                else ("Please visit this URL to sign in: {url}"),
                timeout_seconds=max(1, int(timeout)),
                access_type="offline",
                prompt="consent",
            )
        self._save(tenant, credentials)

    # -- web application: two requests of the application's own ------------------------------

    def authorization_request(
        self, redirect_uri: str, *, login_hint: str | None = None
    ) -> AuthorizationRequest:
        """Where to send the user's browser; keep the returned request for the callback."""
        flow = google_auth_oauthlib.flow.Flow.from_client_config(
            self._config, self.scopes, redirect_uri=redirect_uri
        )
        extra = {"login_hint": login_hint} if login_hint else {}
        url, state = flow.authorization_url(access_type="offline", prompt="consent", **extra)
        data = {"redirect_uri": redirect_uri, "state": state, "code_verifier": flow.code_verifier}
        return AuthorizationRequest(url=url, state=state, data=data)

    def finish_authorization(
        self, tenant: str, request: AuthorizationRequest, authorization_response: str
    ) -> None:
        """Redeem the callback URL the browser came back with; save the tenant's tokens."""
        flow = google_auth_oauthlib.flow.Flow.from_client_config(
            self._config,
            self.scopes,
            redirect_uri=request.data["redirect_uri"],
            state=request.data["state"],
            code_verifier=request.data["code_verifier"],
        )
        with _failures("the Google sign-in", self._token_host):
            flow.fetch_token(authorization_response=authorization_response, verify=self._verify)
        self._save(tenant, flow.credentials)

    @property
    def _store(self) -> TokenStore:
        """`store` (which the application may replace), its failures typed."""
        return guarded(self.store)

    @property
    def _token_host(self) -> str:
        return urlsplit(str(self._config[self.kind].get("token_uri", ""))).hostname or ""

    @property
    def _verify(self) -> str | bool:
        return self._ca_file if self._ca_file is not None else True

    def _save(self, tenant: str, credentials: Any) -> None:
        with self._store.lock(tenant):
            self._store.save(tenant, _dump(credentials))

    def _credentials(self, blob: str) -> Any:
        """Credentials from a stored blob; client and token endpoint from the configuration
        (never from storage)."""
        try:
            info = json.loads(blob)
        except ValueError:
            info = None
        if not (
            isinstance(info, dict)
            and all(isinstance(info.get(k), str | None) for k in ("token", "refresh_token"))
            and isinstance(info.get("expiry"), int | float | None)
        ):
            raise stored_sign_in_unreadable(PROVIDER, "renewing the Google login")
        expiry = info.get("expiry")
        client = self._config[self.kind]
        return google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
            token=info.get("token"),
            refresh_token=info.get("refresh_token"),
            token_uri=client["token_uri"],
            client_id=client["client_id"],
            client_secret=client.get("client_secret"),
            scopes=self.scopes,
            expiry=None
            if expiry is None
            else datetime.datetime.fromtimestamp(float(expiry), datetime.UTC).replace(tzinfo=None),
        )

    # -- tokens -------------------------------------------------------------------------

    def token_provider(self, tenant: str) -> CachingTokenProvider:
        """The `TokenProvider` for `tenant`'s Google account."""

        def acquire(rejected: str | None) -> AccessToken:
            return self._acquire(tenant, rejected)

        return CachingTokenProvider(acquire)

    def _acquire(self, tenant: str, rejected: str | None) -> AccessToken:
        doing = "renewing the Google login"
        with self._store.lock(tenant):
            blob = self._store.load(tenant)
            if not blob:
                raise oauth_error(
                    PROVIDER,
                    {"error": "invalid_grant", "error_description": "no sign-in is stored"},
                    doing,
                )
            credentials = self._credentials(blob)
            token = _usable(credentials, rejected)
            if token is None and not credentials.refresh_token:
                raise oauth_error(
                    PROVIDER,
                    {"error": "invalid_grant", "error_description": "the sign-in was revoked"},
                    doing,
                )
            if token is None:  # nobody refreshed it meanwhile: refresh and save the rotation
                try:
                    with _failures(doing, self._token_host):
                        credentials.refresh(google.auth.transport.requests.Request(self._session))
                except OAuthGrantInvalid:
                    # Forget the dead grant (as msal does): later calls fail without a request.
                    self._store.save(tenant, json.dumps({"token": None, "refresh_token": None}))
                    raise
                self._store.save(tenant, _dump(credentials))
                token = _usable(credentials, None)
            if token is None:
                raise oauth_error(PROVIDER, {"error": "invalid_token"}, doing)
            return token

    def __repr__(self) -> str:
        return f"<GoogleOAuth {self.kind} client {self.client_id!r}>"


def _expires_at(credentials: Any) -> float | None:
    # google-auth keeps expiry as a naive datetime in UTC.
    if credentials.expiry is None:
        return None
    return float(calendar.timegm(credentials.expiry.utctimetuple()))


def _dump(credentials: Any) -> str:
    """The tenant's blob: the tokens and expiry only (no client secret, no endpoint)."""
    return json.dumps(
        {
            "token": credentials.token,
            "refresh_token": credentials.refresh_token,
            "expiry": _expires_at(credentials),
        }
    )


def _usable(credentials: Any, rejected: str | None) -> AccessToken | None:
    """The stored access token while it lives past the margin and was not refused."""
    expires_at = _expires_at(credentials)
    if not credentials.token or credentials.token == rejected or expires_at is None:
        return None
    if expires_at - DEFAULT_MARGIN <= time.time():
        return None
    return AccessToken(credentials.token, expires_at)


class _InstalledAppFlow(google_auth_oauthlib.flow.InstalledAppFlow):  # type: ignore[misc]
    """The library's flow with a browser callback and our CA bundle for the token request."""

    ca_file: str | None = None
    on_url: Callable[[str], object] | None = None

    def authorization_url(self, **kwargs: Any) -> tuple[str, str]:
        url, state = super().authorization_url(**kwargs)
        if self.on_url is not None:
            self.on_url(url)
        return url, state

    def fetch_token(self, **kwargs: Any) -> Any:
        if self.ca_file is not None:
            kwargs.setdefault("verify", self.ca_file)
        return super().fetch_token(**kwargs)


@contextmanager
def _failures(doing: str, host: str) -> Iterator[None]:
    """google-auth, oauthlib, requests and OS failures as typed `OAuthError`s; `host` is
    the token endpoint's."""
    try:
        yield
    except google.auth.exceptions.RefreshError as exc:
        payload = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        if not payload and exc.args:
            payload = {"error": str(exc.args[0]).split(":", 1)[0][:80]}
        if getattr(exc, "retryable", False):
            raise token_endpoint_unreachable(PROVIDER, exc, doing, host=host or None) from None
        raise oauth_error(PROVIDER, payload, doing) from None
    except oauthlib.oauth2.OAuth2Error as exc:
        payload = {"error": exc.error, "error_description": exc.description or ""}
        raise oauth_error(PROVIDER, payload, doing) from None
    except google_auth_oauthlib.flow.WSGITimeoutError:
        raise oauth_error(
            PROVIDER,
            {"error": "timeout", "error_description": "nobody signed in in time"},
            doing,
        ) from None
    except (OSError, google.auth.exceptions.TransportError) as exc:  # requests' errors too
        raise token_endpoint_unreachable(PROVIDER, exc, doing, host=host or None) from None
