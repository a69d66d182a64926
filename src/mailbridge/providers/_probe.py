"""Does a mail server answer on this port with this security? (For guessing settings.)"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

import attrs

from ..settings import Security
from ._deadline import SocketDeadline

__all__ = ["ProbeTarget", "probe_endpoint"]

MAX_LINE = 4096


def _lines(sock: socket.socket | ssl.SSLSocket, until: bytes, limit: int = 40) -> bytes:
    """Read until a line starting with `until` (e.g. b"220 " or b"* OK") arrives."""
    data = b""
    for _ in range(limit):
        chunk = sock.recv(MAX_LINE)
        if not chunk:
            break
        data += chunk
        if any(line.startswith(until) for line in data.split(b"\r\n")):
            return data
    return data


def _smtp(sock: socket.socket, host: str, security: Security, context: ssl.SSLContext) -> bool:
    if security == Security.IMPLICIT_TLS:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return b"220" in _lines(tls, b"220 ")[:4]
    if not _lines(sock, b"220 ").startswith(b"220"):
        return False
    sock.sendall(b"EHLO [127.0.0.1]\r\n")
    if security == Security.NONE:
        return b"250 " in _lines(sock, b"250 ")
    if b"STARTTLS" not in _lines(sock, b"250 ").upper():
        return False
    sock.sendall(b"STARTTLS\r\n")
    if not _lines(sock, b"220").startswith(b"220"):
        return False
    with context.wrap_socket(sock, server_hostname=host):
        return True


def _imap(sock: socket.socket, host: str, security: Security, context: ssl.SSLContext) -> bool:
    if security == Security.IMPLICIT_TLS:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return _lines(tls, b"* OK").startswith(b"* OK")
    if not _lines(sock, b"* OK").startswith(b"* OK"):
        return False
    if security == Security.NONE:
        return True
    sock.sendall(b"m1 CAPABILITY\r\n")
    if b"STARTTLS" not in _lines(sock, b"m1 ").upper():
        return False
    sock.sendall(b"m2 STARTTLS\r\n")
    if b"m2 OK" not in _lines(sock, b"m2 "):
        return False
    with context.wrap_socket(sock, server_hostname=host):
        return True


@attrs.frozen
class ProbeTarget:
    """Where to knock: protocol, host name (for TLS), address to connect to, port, security."""

    protocol: str
    host: str
    address: str
    port: int
    security: Security


def probe_endpoint(target: ProbeTarget, context: ssl.SSLContext, timeout: float) -> bool:
    """True when `host` (reached at `address`) speaks `protocol` with `security` on `port`.

    TLS certificates are verified against `host`. Nothing is sent but
    EHLO/CAPABILITY and STARTTLS; no login is tried. `timeout` bounds the
    whole probe, however slowly the server answers.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
    except OSError:
        return False
    try:
        with SocketDeadline(sock, deadline) as cutoff:
            speak = _smtp if target.protocol == "smtp" else _imap
            return speak(sock, target.host, target.security, context) and not cutoff.expired
    except (OSError, ssl.SSLError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.close()
