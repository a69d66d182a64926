"""The IMAPClient mailbridge uses: bounded reads underneath, typed errors on top.

imapclient offers no public hook for the imaplib object it drives, so this
overrides `IMAPClient._create_IMAP4` (present from imapclient 3.0 to the
version pinned in pyproject.toml); `check_imapclient()` fails clearly when an
imapclient release drops it, and a test guards it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import imapclient

from ..errors import MailbridgeError
from ._failures import PARSE_FAILURES, typed_error
from ._wire import BoundedIMAP4, ImapLimits

__all__ = ["BoundedClient", "check_imapclient"]

# Not wrapped: mailbridge's login and STARTTLS code types their errors itself (with the
# settings for advice), and closing never raises.
_UNGUARDED = frozenset(
    {
        "login",
        "oauth2_login",
        "oauthbearer_login",
        "plain_login",
        "sasl_login",
        "starttls",
        "logout",
        "shutdown",
        "socket",
    }
)
_FAILURES = (imapclient.exceptions.IMAPClientError, OSError, *PARSE_FAILURES)


def check_imapclient() -> None:
    """Raise ImportError naming the supported range when imapclient lacks what we build on."""
    if not callable(getattr(imapclient.IMAPClient, "_create_IMAP4", None)):
        raise ImportError(
            f"imapclient {imapclient.__version__} no longer has IMAPClient._create_IMAP4, "
            "which mailbridge needs to bound IMAP reads; install the imapclient version "
            "range pinned in mailbridge's pyproject.toml"
        )


def _guarded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: BoundedClient, *args: Any, **kwargs: Any) -> Any:
        try:  # looked up at each call, so that IMAPClient stays patchable
            return getattr(super(BoundedClient, self), name)(*args, **kwargs)
        except _FAILURES as exc:
            raise self.typed_error(exc, name.upper().replace("_", " ")) from exc

    return call


class BoundedClient(imapclient.IMAPClient):  # type: ignore[misc]
    """An IMAPClient on a `BoundedIMAP4`; every public command raises typed errors.

    The errors are `ImapCommandFailed` (NO/BAD or an unreadable answer),
    `ImapConnectionLost`, `ImapLimitExceeded` and `ImapTimeout`; each is also
    the imaplib exception imapclient documents, so existing handlers still match.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: bool,
        ssl_context: Any,
        connect_timeout: float,
        read_timeout: float,
        limits: ImapLimits,
    ) -> None:
        self.limits = limits
        self._read_timeout = read_timeout
        super().__init__(
            host,
            port,
            ssl=implicit_tls,
            ssl_context=ssl_context,
            timeout=imapclient.SocketTimeout(connect=connect_timeout, read=read_timeout),
        )

    def _create_IMAP4(self) -> BoundedIMAP4:
        return BoundedIMAP4(
            self.host,
            self.port,
            ssl_context=self.ssl_context if self.ssl else None,
            connect_timeout=self._timeout.connect,
            read_timeout=self._read_timeout,
            limits=self.limits,
        )

    def typed_error(self, exc: BaseException, action: str) -> MailbridgeError:
        """The typed error for `exc`: the wire's own when it closed the connection."""
        imap = getattr(self, "_imap", None)
        failure = imap.failure if isinstance(imap, BoundedIMAP4) else None
        if isinstance(imap, BoundedIMAP4) and isinstance(failure, MailbridgeError):
            imap.failure = None  # reported once; later calls find the connection closed
            return failure
        return typed_error(exc, action)

    @property
    def wire(self) -> BoundedIMAP4:
        """The bounded imaplib connection underneath (for commands imapclient lacks)."""
        imap = self._imap
        assert isinstance(imap, BoundedIMAP4)
        return imap


check_imapclient()
for _name, _method in inspect.getmembers(imapclient.IMAPClient, inspect.isfunction):
    if not _name.startswith("_") and _name not in _UNGUARDED:
        setattr(BoundedClient, _name, _guarded(_name, _method))
