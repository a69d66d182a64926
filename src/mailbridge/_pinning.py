"""Settings pinned to an address that was checked, while TLS and texts keep the host name.

The set-up wizard resolves a server's name once, checks the addresses, and connects
to one of them: the pinned settings' `host` is that address, and their SSL context
verifies the certificate against the name. The texts a tenant reads (diagnoses, step
details, login advice) name the host, with the address in parentheses.
"""

from __future__ import annotations

import socket
import ssl
from typing import TypeVar

import attrs

from .settings import ImapSettings, ServerSettings, SmtpSettings

__all__ = ["pinned", "resolved", "server_name", "shown_host", "where"]


class _NamedContext(ssl.SSLContext):
    """Hands every handshake to `inner` (sockets and asyncio's memory BIOs), verifying the
    certificate against `name`."""

    inner: ssl.SSLContext
    name: str

    def wrap_socket(  # noqa: PLR0917 (the signature of SSLContext.wrap_socket)
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return self.inner.wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=self.name,
            session=session,
        )

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.inner.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=self.name,
            session=session,
        )


_Settings = TypeVar("_Settings", SmtpSettings, ImapSettings)


def pinned(settings: _Settings, address: str) -> _Settings:
    """`settings` that connect to `address` and verify TLS against `settings.host`
    (with the trust `settings` had: a `ca_file` now lives in the inner context)."""
    context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.inner = settings.create_ssl_context()
    context.name = settings.host
    return attrs.evolve(settings, host=address, ssl_context=context, ca_file=None)


def server_name(settings: ServerSettings) -> str:
    """The server's name: the host name pinned settings were resolved from, else `host`."""
    context = settings.ssl_context
    return context.name if isinstance(context, _NamedContext) else settings.host


def shown_host(settings: ServerSettings) -> str:
    """The host as texts show it: ``name (address)`` for pinned settings, else `host`."""
    return resolved(settings, settings.host)


def resolved(settings: ServerSettings, addresses: str) -> str:
    """What `host` resolved to as texts show it: ``name (addresses)`` for pinned settings
    (their host is an address already), else `addresses`."""
    name = server_name(settings)
    return addresses if name == settings.host else f"{name} ({addresses})"


def where(settings: ServerSettings) -> str:
    """``host:port``, or ``name:port (address)`` for pinned settings."""
    name = server_name(settings)
    if name == settings.host:
        return f"{settings.host}:{settings.port}"
    return f"{name}:{settings.port} ({settings.host})"
