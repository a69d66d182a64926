"""What the fake SMTP and IMAP servers share: a throw-away CA, a loop thread, one listener."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Self

import trustme

from ..settings import Security
from ._loop import STOP_TIMEOUT, start_loop_thread, stop_loop_thread

__all__ = ["TlsMode", "TlsServer"]

TlsMode = Literal["none", "starttls", "implicit"]
SECURITY: dict[str, Security] = {
    "none": Security.NONE,
    "starttls": Security.STARTTLS,
    "implicit": Security.IMPLICIT_TLS,
}


class TlsServer:
    """A TCP server on a free loopback port, in a background thread, with its own CA.

    Subclasses give `_factory()` (a new protocol per connection) and
    `_close_connections()` (called in the loop when stopping).
    """

    _name = "FakeServer"

    def __init__(self, *, tls: TlsMode, host: str, certificate_hostnames: Sequence[str]) -> None:
        if tls not in SECURITY:
            raise ValueError(f"tls must be one of {', '.join(SECURITY)}")
        self.tls = tls
        self.host = host
        self.port = 0
        self._directory: Path | None = None
        self._cleanup: Callable[[], object] | None = None
        self._ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        self.ca_file = Path()  # written by start()
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # A CN as well as the SANs: some clients (mbsync) refuse a certificate with IP names only.
        self._ca.issue_cert(
            *certificate_hostnames,
            common_name=certificate_hostnames[0] if certificate_hostnames else None,
            key_type=trustme.KeyType.ECDSA,
        ).configure_cert(self._server_context)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def security(self) -> Security:
        """The `Security` a client must use for this server."""
        return SECURITY[self.tls]

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def _factory(self) -> asyncio.BaseProtocol:
        raise NotImplementedError

    def _close_connections(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start listening; returns self. `port` and `ca_file` are set afterwards."""
        if self._thread is not None:
            return self
        self._directory = Path(tempfile.mkdtemp(prefix=f"mailbridge-{self._name.lower()}-"))
        # A server that is never stopped still removes its directory when collected or at exit.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
        self.ca_file = self._directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        try:
            loop, thread = start_loop_thread(self._name)
            self._loop, self._thread = loop, thread
            ssl_context = self._server_context if self.tls == "implicit" else None
            future = asyncio.run_coroutine_threadsafe(
                loop.create_server(self._factory, self.host, 0, ssl=ssl_context), loop
            )
            self._server = future.result(STOP_TIMEOUT)
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every connection, stop the thread and delete the certificates."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:

            def close() -> None:
                if self._server is not None:
                    self._server.close()
                self._close_connections()

            stop_loop_thread(loop, thread, close)
        self._loop = self._thread = self._server = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None
        self._directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
