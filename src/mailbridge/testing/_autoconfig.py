"""`FakeAutoconfigServer`: serves Thunderbird autoconfig documents over HTTPS on loopback."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import attrs
import trustme

from ..settings import Security, ServerSettings

__all__ = ["AutoconfigRequest", "FakeAutoconfigServer", "client_config_xml"]

AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
STOP_TIMEOUT = 5.0
_SOCKET_TYPE = {
    Security.IMPLICIT_TLS: "SSL",
    Security.STARTTLS: "STARTTLS",
    Security.NONE: "plain",
}


@attrs.frozen
class AutoconfigRequest:
    """One request the server answered: host header, path, query and the status sent."""

    host: str
    path: str
    query: dict[str, list[str]]
    status: int
    tls: bool


def _server_xml(kind: str, settings: ServerSettings, username: str) -> str:
    return (
        f'    <{kind} type="{"smtp" if kind == "outgoingServer" else "imap"}">\n'
        f"      <hostname>{escape(settings.host)}</hostname>\n"
        f"      <port>{settings.port}</port>\n"
        f"      <socketType>{_SOCKET_TYPE[settings.security]}</socketType>\n"
        f"      <username>{escape(username)}</username>\n"
        f"      <authentication>password-cleartext</authentication>\n"
        f"    </{kind}>\n"
    )


def client_config_xml(
    domain: str,
    *,
    smtp: ServerSettings | None = None,
    imap: ServerSettings | None = None,
    username: str = "%EMAILADDRESS%",
    display_name: str | None = None,
) -> str:
    """A clientConfig v1.1 document (Thunderbird's autoconfig format) for `domain`."""
    servers = "".join(
        [
            _server_xml("incomingServer", imap, username) if imap is not None else "",
            _server_xml("outgoingServer", smtp, username) if smtp is not None else "",
        ]
    )
    name = escape(display_name or domain)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{escape(domain)}">\n'
        f"    <domain>{escape(domain)}</domain>\n"
        f"    <displayName>{name}</displayName>\n"
        f"{servers}"
        "  </emailProvider>\n"
        "</clientConfig>\n"
    )


class FakeAutoconfigServer:
    """An HTTPS (or plain HTTP) server for autoconfig documents, with faults on demand.

    Documents are chosen by the request's Host header, so one server stands in
    for `autoconfig.<domain>` and `<domain>` of every test domain:
    `add_config(domain, xml)` serves `xml` at both autoconfig paths for both
    host names. Faults: `delay_seconds` (before every answer), `status` (e.g.
    500 for every request), `fail(host, status)` for one host. `requests`
    records what was asked.
    """

    def __init__(
        self,
        *,
        tls: bool = True,
        certificate_hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
        host: str = "127.0.0.1",
    ) -> None:
        self.tls = tls
        self.host = host
        self.port = 0
        self.requests: list[AutoconfigRequest] = []
        self.delay_seconds = 0.0
        self.status: int | None = None
        self._documents: dict[tuple[str, str], bytes] = {}
        self._failures: dict[str, int] = {}
        self._names = list(certificate_hostnames)
        self._lock = threading.Lock()
        self._ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        self._directory: Path | None = None
        self._cleanup: Callable[[], object] | None = None
        self.ca_file = Path()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`https://127.0.0.1:PORT` (or http://), for a fetcher that ignores DNS."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def add_config(self, domain: str, xml: str) -> None:
        """Serve `xml` for `domain` at autoconfig.<domain> and <domain>, on both paths."""
        domain = domain.lower().rstrip(".")
        with self._lock:
            for host in (f"autoconfig.{domain}", domain):
                for path in AUTOCONFIG_PATHS:
                    self._documents[(host, path)] = xml.encode("utf-8")

    def fail(self, host: str, status: int = 500) -> None:
        """Answer every request for `host` with `status`."""
        self._failures[host.lower()] = status

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        parts = urlsplit(handler.path)
        host = (handler.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        with self._lock:
            document = self._documents.get((host, parts.path))
        status = (
            self.status
            or self._failures.get(host)
            or (HTTPStatus.OK if document is not None else HTTPStatus.NOT_FOUND)
        )
        with self._lock:
            self.requests.append(
                AutoconfigRequest(host, parts.path, parse_qs(parts.query), int(status), self.tls)
            )
        body = document if status == HTTPStatus.OK and document is not None else b""
        handler.send_response(int(status))
        handler.send_header("Content-Type", "text/xml; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> FakeAutoconfigServer:
        """Start listening; returns self."""
        if self._thread is not None:
            return self
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer((self.host, 0), Handler)
        if self.tls:
            self._directory = Path(tempfile.mkdtemp(prefix="mailbridge-fake-autoconfig-"))
            # Removed even when never stopped: when collected, or at exit.
            self._cleanup = weakref.finalize(
                self, shutil.rmtree, self._directory, ignore_errors=True
            )
            self.ca_file = self._directory / "ca.pem"
            self._ca.cert_pem.write_to_path(str(self.ca_file))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert(
                *self._names,
                common_name=self._names[0] if self._names else None,
                key_type=trustme.KeyType.ECDSA,
            ).configure_cert(context)
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def add_certificate_hostnames(self, *names: str) -> None:
        """Also make the certificate valid for `names` (call before `start()`)."""
        self._names.extend(names)

    def stop(self) -> None:
        """Stop serving, close the socket, end the thread, delete the certificates."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self._httpd = self._thread = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None
        self._directory = None

    def __enter__(self) -> FakeAutoconfigServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
