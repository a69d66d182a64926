"""`FakeBrowser`: plays the user's browser for sign-ins that open one (installed apps)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ._oauth_http import get

if TYPE_CHECKING:
    from ._oauth import FakeAuthorizationServer

__all__ = ["FakeBrowser"]


class FakeBrowser:
    """A browser for `InstalledAppFlow`-style sign-ins: `open(url)` signs in and calls the
    application's loopback redirect from a thread; `join()` waits for it."""

    def __init__(self, server: FakeAuthorizationServer, user: str | None) -> None:
        self._server = server
        self._user = user
        self._threads: list[threading.Thread] = []
        self.opened: list[str] = []
        self.errors: list[BaseException] = []

    def __call__(self, url: str) -> None:
        self.open(url)

    def open(self, url: str) -> None:
        self.opened.append(url)

        def visit() -> None:
            try:
                location = self._server.sign_in(url, self._user)
                get(location, self._server.client_ssl_context())
            except BaseException as exc:  # reported to the test through `errors`
                self.errors.append(exc)

        thread = threading.Thread(target=visit, name="fake-browser", daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
