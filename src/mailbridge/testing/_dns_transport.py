"""DNS on the wire for `FakeDnsServer`: UDP and TCP protocols, a port pair, FORMERR replies."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import TYPE_CHECKING, cast

import dns.flags
import dns.message
import dns.rcode

if TYPE_CHECKING:
    from ._dns import FakeDnsServer


PORT_ATTEMPTS = 50


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        transport = self.transport

        def send(wire: bytes) -> None:
            if transport is not None and not transport.is_closing():
                transport.sendto(wire, addr)

        self.server._dispatch(data, "udp", send)


class _TcpProtocol(asyncio.Protocol):
    """DNS over TCP: 2-byte length framing, any number of queries per connection."""

    def __init__(self, server: FakeDnsServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server._tcp_transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._tcp_transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            size = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + size:
                return
            wire = bytes(self.buffer[2 : 2 + size])
            del self.buffer[: 2 + size]
            self.server._dispatch(wire, "tcp", self._send)

    def _send(self, wire: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(wire).to_bytes(2, "big") + wire)


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same free port on `host`."""
    for _ in range(PORT_ATTEMPTS):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except BaseException:
            udp.close()
            raise
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
        except OSError as error:
            tcp.close()
            udp.close()
            if error.errno == errno.EADDRINUSE:
                continue
            raise
        except BaseException:
            tcp.close()
            udp.close()
            raise
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")


def _format_error(wire: bytes) -> bytes | None:
    """A FORMERR reply to a query we could not parse, or None to stay silent."""
    if len(wire) < 12 or wire[2] & 0x80:  # no header, or a response
        return None
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()
