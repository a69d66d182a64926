"""Microsoft 365 (Exchange Online) sign-in and tokens through msal (`mailbridge[microsoft]`).

msal is Microsoft's own library: it knows Entra ID's authorities, the device-code
and authorization-code flows, confidential clients, and keeps a serialisable token
cache whose refresh tokens it rotates; mailbridge only persists that cache per
tenant in a `TokenStore`, under the tenant's lock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from .._distribution import install_hint
from ..errors import OAuthError
from ..providers import ProviderRegistry
from ..settings import Secret
from ._circuit import DEFAULT_BACKOFF
from ._errors import oauth_error, stored_sign_in_unreadable, token_endpoint_unreachable
from ._flows import AuthorizationRequest, DeviceCode
from ._guarded import guarded
from ._provider import AccessToken, CachingTokenProvider
from ._store import TokenStore

try:
    import msal
    import requests
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by the install check
    raise ImportError(
        f"mailbridge.oauth.microsoft needs msal ({exc.name} is missing): "
        f"{install_hint('microsoft')}",
        name=__name__,
    ) from exc

from ._http import http_session
from ._redact import scrub_loggers

__all__ = [
    "DEFAULT_AUTHORITY",
    "DEFAULT_INSTANCE",
    "IMAP_SCOPE",
    "SMTP_SCOPE",
    "MicrosoftOAuth",
]

# msal's token cache logs the authorization code and PKCE verifier it redeemed.
scrub_loggers(
    f"msal.{name}"
    for name in ("token_cache", "application", "authority", "telemetry", "oauth2cli.oauth2")
)

SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
# Work and school accounts of any organisation; a tenant ID or domain narrows it.
DEFAULT_AUTHORITY = "https://login.microsoftonline.com/organizations"
DEFAULT_INSTANCE = "https://login.microsoftonline.com"  # national clouds have their own
MICROSOFT_ISSUER = "login.microsoftonline.com"
_AUTHORITY = "mailbridge_authority"  # the chosen authority, kept in a flow's data
PROVIDER = "microsoft"


class MicrosoftOAuth:
    """One application registration in Microsoft Entra, its sign-in flows and tokens.

    Without `client_secret` it is a public client (desktop, command line: device
    code and authorization code with PKCE); with it, a confidential client (a web
    application). `store` keeps each tenant's msal token cache. `authority` is
    `https://login.microsoftonline.com/<directory>`; without it the authority is chosen
    per account from the provider registry (`OAuth2Info.authority`): `consumers` for
    Outlook.com / Hotmail addresses, `organizations` for Microsoft 365 domains the
    registry knows, and `common` (both kinds of account) for any other address or when
    the account is not known yet, all under `instance`. For any other host than
    Microsoft's (a test server), pass `instance_discovery=False`, msal's supported
    switch for authorities it cannot look up at Microsoft. `ca_file` replaces the
    system trust store.
    After a network failure at the authorization server (refused, time-out, 5xx),
    token renewals fail fast with `OAuthUnavailable` for `backoff=(first, maximum)`
    seconds, the window doubling per failure; a token provider keeps handing out its
    cached access token meanwhile while that token has not expired.
    """

    def __init__(
        self,
        client_id: str,
        *,
        store: TokenStore,
        authority: str | None = None,
        instance: str = DEFAULT_INSTANCE,
        registry: ProviderRegistry | None = None,
        client_secret: str | Secret | None = None,
        scopes: Sequence[str] = (SMTP_SCOPE, IMAP_SCOPE),
        instance_discovery: bool | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
    ) -> None:
        self.client_id = client_id
        self.store = store
        self.authority = authority
        self.instance = instance.rstrip("/")
        self._registry = registry
        self.scopes = list(scopes)
        self._secret = Secret(client_secret) if isinstance(client_secret, str) else client_secret
        self._instance_discovery = instance_discovery
        self._session = http_session(ca_file, timeout, PROVIDER, backoff)
        self._http_cache: dict[Any, Any] = {}  # authority metadata, fetched once

    @property
    def _store(self) -> TokenStore:
        """`store` (which the application may replace), its failures typed."""
        return guarded(self.store)

    @property
    def confidential(self) -> bool:
        """True for a confidential client (one with a client secret)."""
        return self._secret is not None

    def authority_for(self, username: str | None) -> str:
        """The authority `username`'s sign-in and renewals use: the application's own
        `authority`, else `instance` + the audience the provider registry gives the
        address's domain (`consumers`, `organizations`), else `common`."""
        if self.authority:
            return self.authority
        audience = "common"
        domain = (username or "").rpartition("@")[2].strip().lower()
        if domain:
            registry = self._registry or ProviderRegistry.default()
            provider = registry.by_domain(domain)
            oauth2 = provider.oauth2 if provider is not None else None
            if oauth2 is not None and oauth2.authority and oauth2.issuer == MICROSOFT_ISSUER:
                audience = urlsplit(oauth2.authority).path.strip("/") or audience
        return f"{self.instance}/{audience}"

    def _app(self, cache: msal.SerializableTokenCache, authority: str) -> Any:
        options: dict[str, Any] = {
            "authority": authority,
            "token_cache": cache,
            "http_client": self._session,
            "http_cache": self._http_cache,
        }
        if self._instance_discovery is not None:
            options["instance_discovery"] = self._instance_discovery
        try:
            if self._secret is not None:
                return msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._secret.reveal(), **options
                )
            return msal.PublicClientApplication(self.client_id, **options)
        except requests.RequestException as exc:
            raise token_endpoint_unreachable(PROVIDER, exc, "reading the authority") from None

    # -- device code (public clients) -----------------------------------------------

    def start_device_flow(self, *, email: str | None = None) -> DeviceCode:
        """Begin a device-code sign-in: show `message` (code and URL) to the user.

        `email`, the address that will sign in, chooses the authority (see the class).
        """
        if self.confidential:
            raise ValueError("the device-code flow is for public clients (no client_secret)")
        authority = self.authority_for(email)
        app = self._app(msal.SerializableTokenCache(), authority)
        with _network("starting the device sign-in", authority):
            flow = app.initiate_device_flow(scopes=self.scopes)
        if "user_code" not in flow:
            raise oauth_error(PROVIDER, flow, "starting the device sign-in")
        return DeviceCode(
            user_code=flow["user_code"],
            verification_uri=flow.get("verification_uri", ""),
            message=flow.get("message", ""),
            expires_at=float(flow.get("expires_at", time.time() + 900)),
            data={**flow, _AUTHORITY: authority},
        )

    def finish_device_flow(
        self,
        tenant: str,
        code: DeviceCode,
        *,
        timeout: float | None = None,
        progress: Callable[[float], object] | None = None,
    ) -> str:
        """Wait (until the code expires, or `timeout` s) for the user to sign in; save the
        tenant's tokens and return the account's user name. `progress(seconds_left)` is
        called at each poll."""
        cache = msal.SerializableTokenCache()
        flow = dict(code.data)
        authority = str(flow.pop(_AUTHORITY, None) or self.authority_for(None))
        app = self._app(cache, authority)
        deadline = flow.get("expires_at", time.time() + 900)
        if timeout is not None:
            deadline = min(deadline, time.time() + timeout)

        def stop(_flow: dict[str, Any]) -> bool:
            left = deadline - time.time()
            if progress is not None:
                progress(max(0.0, left))
            return bool(left <= 0)

        with _network("the device sign-in", authority):
            result = app.acquire_token_by_device_flow(flow, exit_condition=stop)
        return self._signed_in(tenant, cache, result, "the device sign-in")

    # -- authorization code (web applications, or desktop with a loopback redirect) ---------

    def authorization_request(
        self,
        redirect_uri: str,
        *,
        login_hint: str | None = None,
        state: str | None = None,
        response_mode: str | None = None,
    ) -> AuthorizationRequest:
        """Where to send the user's browser; keep the returned request for the callback.

        `response_mode="form_post"` (msal's advice) makes the callback a POST whose form
        fields are what `finish_authorization` takes; the default is a query string.
        """
        authority = self.authority_for(login_hint)
        app = self._app(msal.SerializableTokenCache(), authority)
        flow = app.initiate_auth_code_flow(
            self.scopes,
            redirect_uri=redirect_uri,
            login_hint=login_hint,
            state=state,
            response_mode=response_mode,
        )
        return AuthorizationRequest(
            url=flow["auth_uri"], state=flow["state"], data={**flow, _AUTHORITY: authority}
        )

    def finish_authorization(
        self, tenant: str, request: AuthorizationRequest, query: Mapping[str, str]
    ) -> str:
        """Redeem the callback's parameters (`code`, `state` or an `error`); save the
        tenant's tokens and return the account's user name."""
        cache = msal.SerializableTokenCache()
        flow = dict(request.data)
        authority = str(flow.pop(_AUTHORITY, None) or self.authority_for(None))
        app = self._app(cache, authority)
        try:
            with _network("the sign-in", authority):
                result = app.acquire_token_by_auth_code_flow(flow, dict(query))
        except ValueError:  # msal: the state does not match (a forged or stale callback)
            raise oauth_error(
                PROVIDER,
                {"error": "invalid_state", "error_description": "the callback's state differs"},
                "the sign-in",
            ) from None
        return self._signed_in(tenant, cache, result, "the sign-in")

    def _signed_in(
        self, tenant: str, cache: msal.SerializableTokenCache, result: Any, doing: str
    ) -> str:
        if not isinstance(result, dict) or "access_token" not in result:
            raise oauth_error(PROVIDER, result if isinstance(result, dict) else {}, doing)
        with self._store.lock(tenant):
            self._store.save(tenant, cache.serialize())
        claims = result.get("id_token_claims") or {}
        return str(claims.get("preferred_username") or claims.get("upn") or "")

    # -- tokens -----------------------------------------------------------------------

    def token_provider(self, tenant: str, username: str | None = None) -> CachingTokenProvider:
        """The `TokenProvider` for `tenant`'s account (`username`, or the only one)."""

        def acquire(rejected: str | None) -> AccessToken:
            return self._acquire(tenant, username, rejected)

        return CachingTokenProvider(acquire)

    def _acquire(self, tenant: str, username: str | None, rejected: str | None) -> AccessToken:
        doing = "renewing the Microsoft login"
        with self._store.lock(tenant):
            cache = msal.SerializableTokenCache()
            blob = self._store.load(tenant)
            if blob:
                if not _is_msal_cache(blob):
                    raise stored_sign_in_unreadable(PROVIDER, doing)
                cache.deserialize(blob)
            authority = self.authority_for(username or _cached_username(blob))
            app = self._app(cache, authority)
            accounts = app.get_accounts(username=username)
            if not accounts:
                raise _not_signed_in(doing)
            with _network(doing, authority):
                # Another worker may have refreshed already: its token is in the cache.
                result = app.acquire_token_silent_with_error(self.scopes, accounts[0])
                if result and result.get("access_token") == rejected:
                    result = app.acquire_token_silent_with_error(
                        self.scopes, accounts[0], force_refresh=True
                    )
            if cache.has_state_changed:  # a rotated refresh token: saved before unlocking
                self._store.save(tenant, cache.serialize())
        if result is None:
            raise _not_signed_in(doing)
        if "access_token" not in result:
            raise oauth_error(PROVIDER, result, doing)
        return AccessToken(result["access_token"], time.time() + float(result["expires_in"]))

    def __repr__(self) -> str:
        kind = "confidential" if self.confidential else "public"
        where = self.authority or f"{self.instance} (per account)"
        return f"<MicrosoftOAuth {kind} client {self.client_id!r} at {where!r}>"


def _is_msal_cache(blob: str) -> bool:
    """True when `blob` has the shape of msal's serialised cache: sections of entries."""
    try:
        data = json.loads(blob)
    except ValueError:
        return False
    return isinstance(data, dict) and all(
        isinstance(section, dict) and all(isinstance(entry, dict) for entry in section.values())
        for section in data.values()
    )


def _cached_username(blob: str | None) -> str | None:
    """The user name of the first account in msal's serialised cache, if any."""
    if not blob:
        return None
    accounts = json.loads(blob).get("Account") or {}
    for entry in accounts.values():
        name = entry.get("username")
        if isinstance(name, str) and name:
            return name
    return None


def _not_signed_in(doing: str) -> OAuthError:
    return oauth_error(
        PROVIDER,
        {"error": "invalid_grant", "error_description": "no sign-in is stored for this account"},
        doing,
    )


@contextmanager
def _network(doing: str, authority: str) -> Iterator[None]:
    """Network failures and msal's HTTP errors (a 5xx) as temporary `OAuthError`s."""
    try:
        yield
    except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
        host = urlsplit(authority).hostname
        raise token_endpoint_unreachable(PROVIDER, exc, doing, host=host) from None
