"""OAuth errors from token-endpoint answers, each with its diagnosis (made in one place)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .. import diagnostics
from ..diagnosis import Category, Diagnosis
from ..errors import OAuthConsentRequired, OAuthError, OAuthGrantInvalid

__all__ = [
    "oauth_diagnosis",
    "oauth_error",
    "stored_sign_in_unreadable",
    "token_endpoint_unreachable",
]

MAX_DESCRIPTION = 300
_CONSENT_ERRORS = frozenset({"consent_required", "interaction_required"})
_CONSENT_CODES = frozenset({65001, 65004, 90094})  # AADSTS: consent missing / declined / admin
_TEMPORARY_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_NAMES = {"microsoft": "Microsoft", "google": "Google"}


def oauth_diagnosis(
    provider: str, error: str, error_codes: tuple[int, ...], description: str
) -> Diagnosis:
    """What a person should do about an OAuth error (said in `diagnostics.oauth_failed`)."""
    return diagnostics.oauth_failed(provider, error, error_codes, description)


def _codes(payload: Mapping[str, Any]) -> tuple[int, ...]:
    raw = payload.get("error_codes")
    codes = [int(c) for c in raw if isinstance(c, int)] if isinstance(raw, list) else []
    if not codes:  # google-auth and msal both keep error_description; AADSTS numbers are in it
        text = str(payload.get("error_description") or "")
        codes = [int(m) for m in re.findall(r"AADSTS(\d{4,6})", text)]
    return tuple(codes)


def oauth_error(provider: str, payload: Mapping[str, Any], doing: str) -> OAuthError:
    """The typed error for an OAuth error response (RFC 6749 5.2) met while `doing`."""
    error = str(payload.get("error") or "unknown_error")[:80]
    codes = _codes(payload)
    description = " ".join(str(payload.get("error_description") or "").split())
    description = description[:MAX_DESCRIPTION]
    diagnosis = oauth_diagnosis(provider, error, codes, description)
    message = f"{doing} failed: {error}"
    if codes:
        message += " (" + ", ".join(f"AADSTS{code}" for code in codes) + ")"
    kind: type[OAuthError] = OAuthError
    if error in _CONSENT_ERRORS or _CONSENT_CODES.intersection(codes):
        kind = OAuthConsentRequired
    elif error == "invalid_grant":
        kind = OAuthGrantInvalid
    return kind(
        message,
        diagnosis=diagnosis,
        provider=provider,
        error=error,
        error_codes=codes,
        description=description,
        temporary=error in _TEMPORARY_ERRORS,
    )


def token_endpoint_unreachable(
    provider: str, exc: BaseException, doing: str, *, host: str | None = None
) -> OAuthError:
    """A network or TLS failure talking to the authorization server (temporary); `host`
    names it (never the URL: a query string may carry a secret)."""
    name = _NAMES.get(provider, "the authorization server")
    server = f"the authorization server {host}" if host else "the authorization server"
    return OAuthError(
        f"{doing} failed: {server} could not be reached ({type(exc).__name__})",
        diagnosis=Diagnosis(
            Category.CONNECTION_LOST,
            f"{name} could not be reached to renew the email login.",
            ("Check the network connection and try again in a few minutes.",),
        ),
        provider=provider,
        error="unreachable",
        temporary=True,
    )


def stored_sign_in_unreadable(provider: str, doing: str) -> OAuthError:
    """The tenant's blob in the `TokenStore` is not what the adapter saved (corrupt,
    truncated, another program's): permanent, like a revoked grant, so sign in again."""
    return oauth_error(
        provider,
        {"error": "invalid_grant", "error_description": "the stored sign-in is unreadable"},
        doing,
    )
