"""Fetching autoconfig documents over HTTPS, with DNS through the caller's resolver."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from typing import Protocol

import dns.resolver

from ._deadline import SocketDeadline
from ._hosts import checked_addresses

__all__ = ["Fetcher", "HttpsFetcher"]

MAX_DOCUMENT_BYTES = 512 * 1024
MAX_ADDRESSES_TRIED = 4  # of one host, in DNS order, while the deadline allows


class Fetcher(Protocol):
    """Gets a URL's body, or None when there is nothing usable there."""

    def fetch(self, url: str, timeout: float) -> bytes | None:
        """The body of a 200 answer, at most the fetcher's size limit; else None."""
        ...


class HttpsFetcher:
    """GET over verified HTTPS; host names resolved with `resolver`.

    `ssl_context` replaces the trust roots (tests use a private CA); `port`
    replaces 443 (tests run the server on a free port). Redirects are not
    followed (autoconfig locations are fixed); bodies over `max_bytes` are
    refused. The time-out covers the whole fetch: resolving (A and AAAA
    together, with dnspython; with no `resolver`, one configured from the
    system's ``resolv.conf``, never the uninterruptible `getaddrinfo`),
    connecting (to the host's next address when one fails), TLS, the response
    headers and the body; at the deadline the connection is shut down,
    however slowly the server is sending. Host names must be DNS names
    or plain IP literals, and addresses that are not global (loopback,
    private, link-local, ...) are refused unless `allow_private` is set.
    """

    def __init__(
        self,
        *,
        resolver: dns.resolver.Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 443,
        http_port: int = 80,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        allow_private: bool = False,
    ) -> None:
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.port = port
        self.http_port = http_port
        self.max_bytes = max_bytes
        self.allow_private = allow_private

    def fetch(self, url: str, timeout: float) -> bytes | None:
        """The body of `url` if it answers 200 within `timeout`; otherwise None.

        Plain `http://` URLs are fetched too (on `http_port`); the caller decides
        whether to ask for them and must treat their content as untrusted.
        """
        deadline = time.monotonic() + timeout
        scheme, _, rest = url.partition("://")
        if scheme not in ("https", "http"):
            return None
        host, _, path = rest.partition("/")
        host, _, port_text = host.partition(":")
        port = int(port_text) if port_text.isdigit() else None
        port = port or (self.port if scheme == "https" else self.http_port)
        addresses, _refused = checked_addresses(
            host, self.resolver, timeout, allow_private=self.allow_private
        )
        raw = _connect(addresses[:MAX_ADDRESSES_TRIED], port, deadline)
        if raw is None:
            return None
        with SocketDeadline(raw, deadline) as cutoff, raw:
            try:
                body = self._get(raw, scheme, host, port, path)
            except (OSError, ValueError, http.client.HTTPException):
                return None  # includes the connection cut at the deadline
            return None if cutoff.expired else body

    def _get(
        self, raw: socket.socket, scheme: str, host: str, port: int, path: str
    ) -> bytes | None:
        sock = raw
        if scheme == "https":
            # The certificate must name the host we meant, not the address we reached.
            sock = self.ssl_context.wrap_socket(raw, server_hostname=host)
        connection = http.client.HTTPConnection(host, port)
        connection.sock = sock  # already connected (to the address resolved above)
        try:
            connection.request(
                "GET", "/" + path, headers={"User-Agent": "mailbridge", "Host": host}
            )
            response = connection.getresponse()
            if response.status != 200:
                return None
            body = response.read(self.max_bytes + 1)
            if response.length:  # the connection ended before Content-Length bytes came
                return None
        finally:
            connection.close()
        return body if len(body) <= self.max_bytes else None


def _connect(addresses: list[str], port: int, deadline: float) -> socket.socket | None:
    """A connection to the first of `addresses` that accepts one before `deadline`."""
    for address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return socket.create_connection((address, port), left)
        except (OSError, ValueError):
            continue
    return None
