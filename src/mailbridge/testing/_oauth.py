"""`FakeAuthorizationServer`: an OAuth2 / OpenID Connect server over HTTPS on loopback.

Good enough that msal and google-auth run against it unchanged: Microsoft-style
authorities (`/{tenant}/v2.0/.well-known/openid-configuration`), Google-style
client configurations, the authorization-code grant with PKCE, refresh tokens
that rotate (the old one dies at once), the device-code grant with
`authorization_pending` and `slow_down`, `invalid_grant` for revoked tokens and a
switch for missing consent. Access tokens are checked by `FakeSmtpServer` and
`FakeImapServer` through `accepts(user, token)`; their expiry is honoured.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from ._oauth_browser import FakeBrowser
from ._oauth_grants import (
    _Access,
    _b64url,
    _client_credentials,
    _Code,
    _Device,
    _error,
    _form,
    _Grant,
)
from ._oauth_http import HttpsFixture, Request, Response, get

__all__ = ["FakeAuthorizationServer", "FakeBrowser"]

MAX_RECORDED = 1000  # token_tenants keeps at most this many entries
CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Microsoft's, for personal accounts
MAX_STALL = 8.0  # a stalled token request is answered after this long at the latest
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
_CONSENT_TEXT = (
    "AADSTS65001: The user or administrator has not consented to use the application "
    "with ID '{client}'. Send an interactive authorization request for this user and resource."
)


class FakeAuthorizationServer:
    """An OAuth2 authorization server on a free loopback port, HTTPS with its own CA.

    `users` may sign in (the first is who the fake browser signs in as);
    `personal_users` are personal Microsoft accounts (Outlook.com, Hotmail), which, as
    at Microsoft, get tokens through the `consumers` and `common` authorities only,
    while work accounts are refused at `consumers`. `token_tenants` lists the tenant
    path of every Microsoft-style token request (`organizations`, `consumers`, ...). Two clients
    are registered: `public_client_id` (no secret: device code, desktop apps) and
    `client_id` with `client_secret` (confidential: web apps, Google clients).
    Knobs: `access_token_lifetime`, `device_interval`, `device_pending_polls` (how
    many polls answer `authorization_pending` after approval), `require_consent`,
    `revoke()`, `expire_access_tokens()`, `advance_clock()`; outages of the token
    endpoint: `token_endpoint_status` (e.g. 503: every token request answers it) and
    `stall_token_endpoint()` (requests hang and are dropped unprocessed, the connection
    closed after `release_token_endpoint()`, `stop()` or `MAX_STALL` s). Counters: `refreshes`
    (refresh grants honoured), `issued` (access tokens issued), `token_requests`.
    """

    def __init__(
        self,
        *,
        users: Sequence[str] = ("alice@example.test",),
        personal_users: Sequence[str] = (),
        client_id: str = "mailbridge-web-client",
        client_secret: str = "fake-client-secret",  # noqa: S107 (a test fixture's)
        public_client_id: str = "mailbridge-public-client",
        access_token_lifetime: int = 3600,
        device_interval: int = 1,
        host: str = "127.0.0.1",
        certificate_hostnames: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
    ) -> None:
        self.personal_users = {user.lower() for user in personal_users}
        self.users = [user.lower() for user in users] + sorted(
            self.personal_users.difference(user.lower() for user in users)
        )
        self.token_tenants: list[str] = []
        self.client_id = client_id
        self.client_secret = client_secret
        self.public_client_id = public_client_id
        self.access_token_lifetime = access_token_lifetime
        self.device_interval = device_interval
        self.device_pending_polls = 0
        self.require_consent = False
        self.refreshes = 0
        self.issued = 0
        self.token_requests = 0
        self.token_endpoint_status: int | None = None
        self._released = threading.Event()
        self._released.set()
        self._offset = 0.0
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._devices: dict[str, _Device] = {}
        self._refresh: dict[str, _Grant] = {}
        self._access: dict[str, _Access] = {}
        self._http = HttpsFixture(
            self._route,
            host=host,
            certificate_hostnames=certificate_hostnames,
            name="fake-oauth",
        )

    # -- where it is -------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def ca_file(self) -> Any:
        """The PEM file of the CA that signed the server's certificate."""
        return self._http.ca_file

    @property
    def url(self) -> str:
        """`https://127.0.0.1:PORT`."""
        return f"https://{self.host}:{self.port}"

    def authority(self, tenant: str = "organizations") -> str:
        """A Microsoft-style authority URL (msal's `authority=`) for `tenant`."""
        return f"{self.url}/{tenant}"

    def google_client_config(self, kind: str = "installed") -> dict[str, Any]:
        """A client configuration as Google Cloud's console downloads it, pointed here."""
        if kind not in ("installed", "web"):
            raise ValueError("kind is 'installed' or 'web'")
        return {
            kind: {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "project_id": "mailbridge-fake",
                "auth_uri": f"{self.url}/google/o/oauth2/auth",
                "token_uri": f"{self.url}/google/token",
                "redirect_uris": ["http://127.0.0.1"],
            }
        }

    def client_ssl_context(self) -> Any:
        """A verifying client context that trusts this server."""
        return self._http.client_ssl_context()

    # -- the user's side -------------------------------------------------------------

    def sign_in(self, url: str, user: str | None = None) -> str:
        """Play the user in a browser: open the authorization `url`, sign in as `user`
        (default: the first user), consent, and return the redirect's URL."""
        status, headers, body = get(self._as_user(url, user), self.client_ssl_context())
        location = headers.get("Location") or headers.get("location")
        if status != 302 or not location:
            raise AssertionError(f"the fake sign-in answered {status}: {body[:200]!r}")
        return location

    def sign_in_form(self, url: str, user: str | None = None) -> tuple[str, dict[str, str]]:
        """`sign_in` for `response_mode=form_post`: the callback URL and the fields the
        browser POSTs to it."""
        status, _, body = get(self._as_user(url, user), self.client_ssl_context())
        page = body.decode("utf-8", "replace")
        action = re.search(r'action="([^"]*)"', page)
        if status != 200 or action is None:
            raise AssertionError(f"the fake sign-in answered {status}: {body[:200]!r}")
        fields = re.findall(r'name="([^"]*)" value="([^"]*)"', page)
        return html.unescape(action.group(1)), {
            html.unescape(k): html.unescape(v) for k, v in fields
        }

    @staticmethod
    def _as_user(url: str, user: str | None) -> str:
        if not user:
            return url
        return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode({'fake_user': user})}"

    def browser(self, user: str | None = None) -> FakeBrowser:
        """A browser to hand to a flow that opens one: it signs in and follows the
        redirect to the application's loopback server, in a thread (`join()` it)."""
        return FakeBrowser(self, user)

    def approve_device_code(self, user_code: str | None = None, user: str | None = None) -> None:
        """The user enters `user_code` (default: every pending one) and signs in."""
        with self._lock:
            for device in self._devices.values():
                if user_code is None or device.user_code == user_code:
                    device.user = (user or self.users[0]).lower()

    # -- what the test controls ----------------------------------------------------------

    def now(self) -> float:
        """The server's clock (wall time plus `advance_clock`)."""
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> None:
        """Move the server's clock on: tokens and codes expire as if time had passed."""
        with self._lock:
            self._offset += seconds

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (clients do not know)."""
        with self._lock:
            for access in self._access.values():
                access.expires_at = min(access.expires_at, self.now() - 1)

    def revoke(self, user: str | None = None) -> None:
        """Revoke the refresh and access tokens of `user` (default: everyone's)."""
        with self._lock:
            for store in (self._refresh, self._access):
                for key in [k for k, v in store.items() if user in (None, v.user)]:
                    del store[key]

    def accepts(self, user: str, token: str) -> bool:
        """True when `token` is an unexpired access token this server issued to `user`."""
        with self._lock:
            access = self._access.get(token)
            return (
                access is not None
                and access.user == user.lower()
                and access.expires_at > self.now()
            )

    def stall_token_endpoint(self) -> None:
        """Token requests from now on hang without an answer (a blackholed endpoint)."""
        self._released.clear()

    def release_token_endpoint(self) -> None:
        """Hanging token requests get answered; new ones are answered at once."""
        self._released.set()

    def valid_refresh_tokens(self) -> int:
        """How many refresh tokens are currently valid (rotation leaves one per grant)."""
        with self._lock:
            return len(self._refresh)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._http.start()
        return self

    def stop(self) -> None:
        self._released.set()  # hanging handlers finish, so stopping joins them at once
        self._http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FakeAuthorizationServer {self.url}>"

    # -- HTTP -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Response | None:
        path = request.path
        base = path.rsplit("/", 1)[0]
        if path.endswith("/.well-known/openid-configuration"):
            return Response(
                200, self._configuration(path.removesuffix("/.well-known/openid-configuration"))
            )
        if request.method == "GET" and path.endswith(("/authorize", "/auth")):
            return self._authorize(parse_qs(request.query), base)
        if request.method == "POST" and path.endswith(("/devicecode", "/device/code")):
            return self._device_code(_form(request), base)
        if request.method == "POST" and path.endswith("/token"):
            with self._lock:
                self.token_requests += 1
            if not self._released.is_set():  # blackholed: never processed, never answered
                self._released.wait(MAX_STALL)
                return None
            if self.token_endpoint_status is not None:
                return _error(
                    self.token_endpoint_status,
                    "temporarily_unavailable",
                    "AADSTS90033: A transient error has occurred. Please try again.",
                )
            return self._token(request, google=path.startswith("/google/"))
        return Response(404, {"error": "not_found"})

    def _configuration(self, prefix: str) -> dict[str, Any]:
        issuer = f"{self.url}{prefix}"
        endpoints = issuer.removesuffix("/v2.0") + "/oauth2/v2.0"
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{endpoints}/authorize",
            "token_endpoint": f"{endpoints}/token",
            "device_authorization_endpoint": f"{endpoints}/devicecode",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "offline_access"],
        }

    def _authorize(self, query: Mapping[str, list[str]], base: str) -> Response:
        def one(name: str) -> str:
            return (query.get(name) or [""])[0]

        client_id, redirect_uri = one("client_id"), one("redirect_uri")
        if client_id not in (self.client_id, self.public_client_id) or not redirect_uri:
            return Response(400, b"unknown client or no redirect_uri")
        user = (one("fake_user") or one("login_hint") or self.users[0]).lower()
        if user not in self.users:
            return Response(400, b"unknown user")
        state = one("state")
        if self.require_consent:
            params = {
                "error": "consent_required",
                "error_description": _CONSENT_TEXT.format(client=client_id),
            }
        else:
            code = secrets.token_urlsafe(24)
            challenge = one("code_challenge") or None
            if challenge is not None and one("code_challenge_method") not in ("S256", ""):
                return Response(400, b"only S256 PKCE")
            with self._lock:
                self._codes[code] = _Code(
                    user,
                    client_id,
                    redirect_uri,
                    tuple(one("scope").split()),
                    challenge,
                    one("nonce") or None,
                    self.now() + 600,
                )
            params = {"code": code}
        if state:
            params["state"] = state
        if one("response_mode") == "form_post":  # a page that POSTs the fields to the callback
            fields = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in params.items()
            )
            page = (
                f'<html><body onload="document.forms[0].submit()"><form method="post" '
                f'action="{html.escape(redirect_uri)}">{fields}</form></body></html>'
            )
            return Response(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})
        sep = "&" if "?" in redirect_uri else "?"
        return Response(302, headers={"Location": f"{redirect_uri}{sep}{urlencode(params)}"})

    def _device_code(self, form: Mapping[str, str], base: str) -> Response:
        client_id = form.get("client_id", "")
        if client_id != self.public_client_id:
            return Response(400, {"error": "invalid_client", "error_description": "not public"})
        device_code = secrets.token_urlsafe(32)
        user_code = secrets.token_hex(4).upper()
        with self._lock:
            self._devices[device_code] = _Device(
                user_code, client_id, tuple(form.get("scope", "").split()), self.now() + 900
            )
        verification_uri = f"{self.url}{base}/devicelogin"
        return Response(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "expires_in": 900,
                "interval": self.device_interval,
                "message": f"To sign in, use a web browser to open the page {verification_uri} "
                f"and enter the code {user_code} to authenticate.",
            },
        )

    def _token(self, request: Request, *, google: bool) -> Response:
        form = _form(request)
        client_id, secret = _client_credentials(request, form)
        if client_id == self.client_id:
            if not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
                return _error(401, "invalid_client", "AADSTS7000215: Invalid client secret.")
        elif client_id != self.public_client_id:
            return _error(400, "invalid_client", "AADSTS700016: unknown application.")
        grant_type = form.get("grant_type", "")
        form["fake_tenant"] = "" if google else request.path.strip("/").split("/")[0]
        with self._lock:
            if not google and len(self.token_tenants) < MAX_RECORDED:
                self.token_tenants.append(form["fake_tenant"])
            if grant_type == "authorization_code":
                return self._code_grant(form, client_id)
            if grant_type == "refresh_token":
                return self._refresh_grant(form, client_id, google=google)
            if grant_type == DEVICE_GRANT:
                return self._device_grant(form, client_id)
        return _error(400, "unsupported_grant_type", f"{grant_type[:40]} is not supported")

    def _code_grant(self, form: Mapping[str, str], client_id: str) -> Response:
        code = self._codes.pop(form.get("code", ""), None)  # single use
        if code is None or code.expires_at < self.now() or code.client_id != client_id:
            return _error(400, "invalid_grant", "AADSTS70000: the code is invalid or expired.")
        if code.redirect_uri != form.get("redirect_uri"):
            return _error(400, "invalid_grant", "AADSTS50148: redirect_uri does not match.")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if _b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
                return _error(400, "invalid_grant", "AADSTS501481: code_verifier is wrong.")
        refused = self._wrong_audience(code.user, form)
        if refused is not None:
            return refused
        scopes = tuple(form.get("scope", "").split()) or code.scopes
        return self._issue(code.user, client_id, scopes, nonce=code.nonce, form=form)

    def _refresh_grant(self, form: Mapping[str, str], client_id: str, *, google: bool) -> Response:
        grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != client_id:
            text = (
                "Token has been expired or revoked."
                if google
                else "AADSTS70008: The provided refresh token has expired or was revoked."
            )
            return _error(400, "invalid_grant", text)
        if self.require_consent:
            response = _error(400, "invalid_grant", _CONSENT_TEXT.format(client=client_id))
            response.body = json.dumps(
                {**json.loads(response.body), "suberror": "consent_required"}
            ).encode()
            return response
        refused = self._wrong_audience(grant.user, form)
        if refused is not None:
            return refused
        del self._refresh[form["refresh_token"]]  # rotation: the old token dies now
        self.refreshes += 1
        scopes = tuple(form.get("scope", "").split()) or grant.scopes
        return self._issue(grant.user, client_id, scopes, form=form)

    def _device_grant(self, form: Mapping[str, str], client_id: str) -> Response:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.client_id != client_id:
            return _error(400, "invalid_grant", "AADSTS70000: unknown device code.")
        now = self.now()
        if device.expires_at < now:
            return _error(400, "expired_token", "AADSTS70020: the device code expired.")
        too_soon = now - device.last_poll < self.device_interval - 0.2
        device.last_poll = now
        device.polls += 1
        if too_soon and device.polls > 1:
            return _error(400, "slow_down", "Polling too fast.")
        if device.user is None or device.polls <= self.device_pending_polls:
            return _error(400, "authorization_pending", "AADSTS70016: waiting for the user.")
        if self.require_consent:
            return _error(400, "invalid_grant", _CONSENT_TEXT.format(client=client_id))
        refused = self._wrong_audience(device.user, form)
        if refused is not None:
            return refused
        del self._devices[form["device_code"]]
        return self._issue(device.user, client_id, device.scopes, form=form)

    def _wrong_audience(self, user: str, form: Mapping[str, str]) -> Response | None:
        """Microsoft's rule: personal accounts only at `consumers`/`common`, work
        accounts not at `consumers`."""
        tenant = form.get("fake_tenant", "")
        if user in self.personal_users and tenant not in ("", "consumers", "common"):
            return _error(
                400,
                "invalid_request",
                f"AADSTS500200: User account '{user}' is a personal Microsoft account. "
                "Personal Microsoft accounts are not supported for this tenant.",
            )
        if user not in self.personal_users and tenant == "consumers":
            return _error(400, "invalid_request", "AADSTS50034: The user account does not exist.")
        return None

    def _issue(
        self,
        user: str,
        client_id: str,
        scopes: Iterable[str],
        *,
        form: Mapping[str, str],
        nonce: str | None = None,
    ) -> Response:
        scopes = tuple(scopes)
        now = self.now()
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = _Access(user, now + self.access_token_lifetime)
        self._refresh[refresh] = _Grant(user, client_id, scopes)
        self.issued += 1
        oid = hashlib.sha256(user.encode()).hexdigest()[:32]
        tid = CONSUMERS_TENANT_ID if user in self.personal_users else "fake-tenant"
        claims = {
            "iss": f"{self.url}/organizations/v2.0",
            "aud": client_id,
            "sub": oid,
            "oid": oid,
            "tid": tid,
            "iat": int(now),
            "exp": int(now) + 3600,
            "preferred_username": user,
            "email": user,
            **({"nonce": nonce} if nonce else {}),
        }
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(s for s in scopes if s not in _OIDC_SCOPES) or " ".join(scopes),
            "expires_in": self.access_token_lifetime,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": ".".join(
                (
                    _b64url(b'{"alg":"none","typ":"JWT"}'),
                    _b64url(json.dumps(claims).encode()),
                    "",
                )
            ),
        }
        if form.get("client_info") == "1":  # msal asks for it to name the account
            body["client_info"] = _b64url(json.dumps({"uid": oid, "utid": tid}).encode())
        return Response(200, body)
