"""The HTTP session the msal and google-auth adapters hand to their library."""

from __future__ import annotations

import os
from typing import Any

import requests

__all__ = ["http_session"]


class _Session(requests.Session):
    """A `requests.Session` whose CA bundle and time-out hold for every request.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own
    `verify`; an explicit per-request value wins, so it is set on each request.
    """

    def __init__(self, ca_file: str | None, timeout: float) -> None:
        super().__init__()
        self._ca_file = ca_file
        self._timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if self._ca_file is not None and kwargs.get("verify") in (None, True):
            kwargs["verify"] = self._ca_file
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]


def http_session(ca_file: str | os.PathLike[str] | None, timeout: float) -> requests.Session:
    """A session verifying against `ca_file` (None: the system's trust store)."""
    return _Session(None if ca_file is None else os.fspath(ca_file), timeout)
