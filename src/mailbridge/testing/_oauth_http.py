"""The HTTPS side of `FakeAuthorizationServer`: a threaded HTTP/1.0 server with its own CA.

Each connection's TLS handshake happens in its handler thread (a client that never
completes it blocks nobody), every socket has a time-out, bodies are capped, and
`stop()` joins every handler thread.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme

__all__ = ["HttpsFixture", "Request", "Response", "get"]

MAX_BODY = 64 * 1024
SOCKET_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class Request:
    """One parsed request: method, path, query, form (or JSON) body and headers."""

    def __init__(self, method: str, path: str, query: str, body: bytes, headers: Any) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.headers = headers


class Response:
    """What a route answers: status, headers and a body (JSON when given a dict)."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any] | bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if isinstance(body, dict):
            self.body = json.dumps(body).encode()
            self.headers.setdefault("Content-Type", "application/json")
        else:
            self.body = body
        self.headers.setdefault("Cache-Control", "no-store")


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: Any
    ) -> None:
        self.tls_context: ssl.SSLContext = context
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(SOCKET_TIMEOUT)
        try:
            secured = self.tls_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(secured, client_address)
        finally:
            secured.close()


class HttpsFixture:
    """An HTTPS server on a free loopback port answering with `route(request)`."""

    def __init__(
        self,
        route: Callable[[Request], Response | None],
        *,
        host: str,
        certificate_hostnames: Sequence[str],
        name: str,
    ) -> None:
        self.host = host
        self.port = 0
        self.ca_file = Path()
        self._route = route
        self._name = name
        self._names = list(certificate_hostnames)
        self._ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cleanup: Callable[[], object] | None = None

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def start(self) -> None:
        if self._thread is not None:
            return
        directory = Path(tempfile.mkdtemp(prefix=f"mailbridge-{self._name}-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        self.ca_file = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(
            *self._names, common_name=self._names[0], key_type=trustme.KeyType.ECDSA
        ).configure_cert(context)
        route = self._route

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers
            timeout = SOCKET_TIMEOUT

            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= MAX_BODY:
                    self.send_error(413)
                    return
                body = self.rfile.read(length) if length else b""
                response = route(Request(self.command, path, query, body, self.headers))
                if response is None:  # dropped: the connection closes without an answer
                    self.close_connection = True
                    return
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass  # a request line may carry a code or a token

        httpd = _Server((self.host, 0), Handler, context)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{self._name}-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self._httpd = self._thread = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None


def get(url: str, context: ssl.SSLContext) -> tuple[int, dict[str, str], bytes]:
    """One GET without following redirects (https with `context`, or plain http)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, context=context, timeout=SOCKET_TIMEOUT
        )
    else:
        connection = http.client.HTTPConnection(
            parts.hostname or "", parts.port, timeout=SOCKET_TIMEOUT
        )
    try:
        connection.request("GET", target or "/")
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read(MAX_BODY)
    except (OSError, http.client.HTTPException):
        return 0, {}, b""
    finally:
        connection.close()
