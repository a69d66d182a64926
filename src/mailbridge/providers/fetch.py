"""Fetching autoconfig documents over HTTPS, with DNS through the caller's resolver."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from typing import Protocol

import dns.exception
import dns.resolver

__all__ = ["Fetcher", "HttpsFetcher", "resolve_host"]

MAX_DOCUMENT_BYTES = 512 * 1024


class Fetcher(Protocol):
    """Gets a URL's body, or None when there is nothing usable there."""

    def fetch(self, url: str, timeout: float) -> bytes | None:
        """The body of a 200 answer, at most the fetcher's size limit; else None."""
        ...


def resolve_host(host: str, resolver: dns.resolver.Resolver | None, timeout: float) -> list[str]:
    """IP addresses of `host` (A, then AAAA) through `resolver`, or the system when None."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    if resolver is None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(
                host, rdtype, lifetime=timeout, raise_on_no_answer=False, search=False
            )
        except dns.exception.DNSException:
            continue
        addresses.extend(rdata.address for rdata in answer.rrset or ())
        if addresses:  # IPv4 found: no need to wait for AAAA as well
            break
    return addresses


class _Connection(http.client.HTTPSConnection):
    def __init__(
        self, host: str, ip: str, port: int, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip
        self._context = context

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        # The certificate must name the host we meant, not the address we reached.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class HttpsFetcher:
    """GET over verified HTTPS; host names resolved with `resolver`.

    `ssl_context` replaces the trust roots (tests use a private CA); `port`
    replaces 443 (tests run the server on a free port). Redirects are not
    followed (autoconfig locations are fixed); bodies over `max_bytes` are
    refused.
    """

    def __init__(
        self,
        *,
        resolver: dns.resolver.Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 443,
        http_port: int = 80,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.port = port
        self.http_port = http_port
        self.max_bytes = max_bytes

    def fetch(self, url: str, timeout: float) -> bytes | None:
        """The body of `url` if it answers 200 within `timeout`; otherwise None.

        Plain `http://` URLs are fetched too (on `http_port`); the caller decides
        whether to ask for them and must treat their content as untrusted.
        """
        scheme, _, rest = url.partition("://")
        if scheme not in ("https", "http"):
            return None
        host, _, path = rest.partition("/")
        host, _, port_text = host.partition(":")
        port = int(port_text) if port_text.isdigit() else None
        deadline = time.monotonic() + timeout
        addresses = resolve_host(host, self.resolver, timeout)
        if not addresses:
            return None
        connection: http.client.HTTPConnection
        remaining = max(0.05, deadline - time.monotonic())
        if scheme == "https":
            connection = _Connection(
                host, addresses[0], port or self.port, remaining, self.ssl_context
            )
        else:
            connection = http.client.HTTPConnection(
                addresses[0], port or self.http_port, timeout=remaining
            )
        try:
            connection.request(
                "GET", "/" + path, headers={"User-Agent": "mailbridge", "Host": host}
            )
            response = connection.getresponse()
            if response.status != 200:
                return None
            body = b""
            while len(body) <= self.max_bytes:  # one deadline for the whole body
                if time.monotonic() > deadline:
                    return None
                chunk = response.read1(65536)
                if not chunk:
                    break
                body += chunk
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
        return body if len(body) <= self.max_bytes else None
