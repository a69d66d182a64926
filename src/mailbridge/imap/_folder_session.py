"""An importer's session on one folder, reopened a bounded number of times when it breaks.

A hostile message (a part sent far beyond its declared size, a description over
the line limit) makes the bounded wire close the connection with an
`ImapLimitExceeded`. The importer then reopens the session here, checks the
folder's UIDVALIDITY is unchanged, and goes on without that message; past
`max_reopens` the failure is raised. A lost connection or a time-out is no
message's fault: it is raised at once (nothing is committed, the next run retries).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigurationError, MailbridgeError, UidValidityChanged
from ..settings import ImapSettings
from ._client import BoundedClient
from ._connection import close_imap, open_imap
from ._failures import unusable_answer
from ._wire import ImapLimits

__all__ = ["MAX_REOPENS", "FolderSession", "fetch_session", "uidvalidity"]

# Reopens per fetch beyond one per message: an over-limit message costs one reopen and
# is reported, so every fetch gets past any number of them; a server that breaks more
# often than that fails the fetch with the typed error.
MAX_REOPENS = 3


def uidvalidity(selected: dict[bytes, Any], folder: str) -> int:
    """The folder's UIDVALIDITY from a SELECT answer; an `ImapCommandFailed` when there is none."""
    value = selected.get(b"UIDVALIDITY")
    if isinstance(value, int) and 0 < value < 2**32:
        return value
    raise unusable_answer(f"SELECT {folder!r}", "no valid UIDVALIDITY, which RFC 3501 requires")


class FolderSession:
    """A logged-in client with `folder` selected read-only; `reopen()` after a break."""

    def __init__(
        self,
        settings: ImapSettings,
        folder: str,
        limits: ImapLimits,
        *,
        max_reopens: int = MAX_REOPENS,
        deadline: float | None = None,
    ) -> None:
        self.settings = settings
        self.deadline = deadline  # time.monotonic() by which every command must be done
        self.folder = folder
        self.limits = limits
        self.max_reopens = max_reopens
        self.reopens = 0
        self.client = self._open()
        try:
            self.uidvalidity = self._select()
        except BaseException:
            close_imap(self.client)
            raise

    def _open(self) -> BoundedClient:
        client = open_imap(self.settings, limits=self.limits)
        client.wire.operation_deadline = self.deadline
        return client

    def _select(self) -> int:
        return uidvalidity(self.client.select_folder(self.folder, readonly=True), self.folder)

    def reopen(self, failure: MailbridgeError) -> None:
        """A fresh session after `failure` closed this one; raises `failure` past the bound."""
        close_imap(self.client)
        late = self.deadline is not None and time.monotonic() >= self.deadline
        if late or self.reopens >= self.max_reopens:
            raise failure
        self.reopens += 1
        self.client = self._open()
        if self._select() != self.uidvalidity:
            raise UidValidityChanged(
                f"the UIDs of {self.folder} changed during the import; nothing was imported. "
                "Fetch again: messages already marked are not imported twice."
            )

    def close(self) -> None:
        """LOGOUT; never raises."""
        close_imap(self.client)


@contextlib.contextmanager
def fetch_session(
    settings: ImapSettings, folder: str, limits: ImapLimits, timeout: float | None
) -> Iterator[FolderSession]:
    """A `FolderSession` whose commands after login share `timeout` seconds (None: each
    command only its own limit); closed afterwards. A bad `timeout` is a
    `ConfigurationError` before anything is opened."""
    deadline = None
    if timeout is not None:
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigurationError("timeout", "must be a positive, finite number")
        deadline = time.monotonic() + timeout
    session = FolderSession(settings, folder, limits, deadline=deadline)
    try:
        yield session
    finally:
        session.close()
