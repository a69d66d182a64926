"""The HTTP session the msal and google-auth adapters hand to their library."""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import ConfigurationError, MailbridgeError
from ._circuit import DEFAULT_BACKOFF, Circuits
from ._errors import token_endpoint_unreachable

__all__ = ["checked_ca_file", "http_session"]


def checked_ca_file(ca_file: str | os.PathLike[str] | None) -> str | None:
    """`ca_file` as a path, after checking it holds certificates a TLS client can load.

    A missing, unreadable or non-PEM file is a `ConfigurationError` naming `ca_file`
    now, not an `OSError` at the first token request.
    """
    if ca_file is None:
        return None
    path = os.fspath(ca_file)
    try:
        ssl.create_default_context(cafile=path)
    except OSError as exc:  # FileNotFoundError, PermissionError, ssl.SSLError (not PEM)
        reason = getattr(exc, "reason", None) or exc.strerror
        raise ConfigurationError(
            "ca_file",
            f"{path} cannot be used as the CA file ({reason or type(exc).__name__})",
        ) from None
    return path


class _Session(requests.Session):
    """A `requests.Session` whose CA bundle and time-out hold for every request.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own
    `verify`; an explicit per-request value wins, so it is set on each request. Any
    `OSError` on the way (refused, reset, time-out, the CA file gone) is a temporary
    `OAuthError` naming the endpoint's host only (a URL may carry a secret).
    """

    def __init__(
        self, ca_file: str | None, timeout: float, provider: str, circuits: Circuits
    ) -> None:
        super().__init__()
        self._ca_file = ca_file
        self._timeout = timeout
        self._provider = provider
        self._circuits = circuits

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if self._ca_file is not None and kwargs.get("verify") in (None, True):
            kwargs["verify"] = self._ca_file
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        parts = urlsplit(url.decode("ascii", "replace") if isinstance(url, bytes) else url)
        host = parts.hostname or "the authorization server"
        endpoint = parts.netloc.rpartition("@")[2]  # the circuit's key: host and port
        self._circuits.before(endpoint)
        try:
            response = super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]
        except MailbridgeError:
            raise
        except OSError as exc:  # requests' errors are OSErrors too
            self._circuits.failed(endpoint)
            raise token_endpoint_unreachable(
                self._provider, exc, f"reaching {host}", host=host
            ) from None
        if _unavailable(response):
            self._circuits.failed(endpoint)
        else:
            self._circuits.succeeded(endpoint)
        return response


def _unavailable(response: requests.Response) -> bool:
    """A 5xx, or an OAuth error `temporarily_unavailable` (RFC 6749 4.1.2.1)."""
    if response.status_code >= 500:
        return True
    return response.status_code >= 400 and b"temporarily_unavailable" in response.content[:4096]


def http_session(
    ca_file: str | os.PathLike[str] | None,
    timeout: float,
    provider: str = "",
    backoff: tuple[float, float] = DEFAULT_BACKOFF,
) -> requests.Session:
    """A session verifying against `ca_file` (None: the system's trust store) that fails
    fast, for a growing `backoff` window, at a host that just failed."""
    return _Session(checked_ca_file(ca_file), timeout, provider, Circuits(provider, backoff))
