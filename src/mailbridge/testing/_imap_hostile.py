"""`HostileImapServer`: a scripted, single-connection IMAP server for attack tests.

It answers the usual commands plainly and hands chosen ones to a script that
may misbehave (inject responses around STARTTLS, announce huge literals,
trickle bytes, stream without end). Everything is bounded: one connection,
at most `max_commands` commands, every socket operation under a time-out,
and each script loop stops when the client hangs up or `stop()` is called.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping

import trustme

from ..settings import ImapSettings

__all__ = ["HostileImapServer", "Peer"]

Script = Callable[["Peer", bytes], None]
CAPABILITIES = b"IMAP4rev1 AUTH=PLAIN SPECIAL-USE"


class Peer:
    """The server's side of the connection, for scripts."""

    def __init__(self, server: HostileImapServer, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket = sock
        self.line = b""  # the command being answered
        self._buffer = b""

    @property
    def stopped(self) -> bool:
        """True once the test stops the server: scripts end their loops."""
        return self.server.stopping.is_set()

    def send(self, data: bytes) -> bool:
        """Send; False when the client is gone (scripts stop then)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def readline(self) -> bytes:
        """One line from the client, b"" when it hung up."""
        while b"\n" not in self._buffer:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return b""
            if not data:
                return b""
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def stream(self, chunk: bytes, *, times: int, pause: float = 0.0) -> int:
        """Send `chunk` up to `times` times (pausing between); how many went out."""
        for sent in range(times):
            if self.stopped or not self.send(chunk):
                return sent
            if pause:
                self.server.stopping.wait(pause)
        return times

    def starttls(self, *, before_ok: bytes = b"", after_ok: bytes = b"", tag: bytes) -> bool:
        """Answer STARTTLS with extra bytes around the OK in one write, then handshake."""
        self.send(before_ok + tag + b" OK Begin TLS now\r\n" + after_ok)
        try:
            self.sock = self.server.context.wrap_socket(self.sock, server_side=True)
        except (OSError, ValueError):
            return False
        self._buffer = b""
        return True


class HostileImapServer:
    """One scripted IMAP connection on loopback; `scripts` maps a command to its handler.

    Keys are command names ("LIST", "UID FETCH", "STARTTLS"...); a handler gets
    the `Peer` and the tag and answers as it likes. Other commands get plain,
    valid answers. `received` records the client's lines (AUTHENTICATE decoded).
    """

    def __init__(
        self,
        scripts: Mapping[str, Script] | None = None,
        *,
        capabilities: bytes = CAPABILITIES,
        starttls: bool = False,
        max_commands: int = 50,
        timeout: float = 10.0,
    ) -> None:
        self.scripts = dict(scripts or {})
        self.capabilities = capabilities
        self.offers_starttls = starttls
        self.max_commands = max_commands
        self.timeout = timeout
        self.ca = trustme.CA()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(self.context)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def settings(self, **changes: object) -> ImapSettings:
        """Settings that reach this server (STARTTLS or plain, trusting its CA)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        values: dict[str, object] = {
            "security": "starttls" if self.offers_starttls else "none",
            "username": "tenant@example.test",
            "password": "pw",
            "allow_plaintext_auth": True,
            "ssl_context": context,
            "command_timeout": 5.0,
            **changes,
        }
        return ImapSettings("127.0.0.1", self.port, **values)  # type: ignore[arg-type]

    def __enter__(self) -> HostileImapServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the scripts, close the sockets, join the thread."""
        self.stopping.set()
        self.listener.close()
        self._thread.join(self.timeout + 5)

    def _caps(self, tls_done: bool) -> bytes:
        starttls = b" STARTTLS" if self.offers_starttls and not tls_done else b""
        return self.capabilities + starttls

    def _serve(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:  # short accept time-outs, so that stop() ends an unused server at once
            try:
                sock, _ = self.listener.accept()
                break
            except TimeoutError:
                if self.stopping.is_set() or time.monotonic() > deadline:
                    return
            except OSError:
                return
        sock.settimeout(self.timeout)
        peer = Peer(self, sock)
        try:
            self._converse(peer)
        finally:
            peer.sock.close()

    def _converse(self, peer: Peer) -> None:
        tls_done = False
        peer.send(b"* OK [CAPABILITY " + self._caps(tls_done) + b"] hostile ready\r\n")
        deadline = time.monotonic() + self.timeout
        for _ in range(self.max_commands):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            line = peer.readline()
            if not line:
                return
            self.received.append(line)
            peer.line = line
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            words = rest.split(b" ")
            name = words[0].upper().decode("ascii", "replace")
            if name == "UID" and len(words) > 1:
                name = "UID " + words[1].upper().decode("ascii", "replace")
            script = self.scripts.get(name)
            if name == "STARTTLS":
                tls_done = True
                if script is None and not peer.starttls(tag=tag):
                    return
            if script is not None:
                script(peer, tag)
            elif name != "STARTTLS" and not self._answer(peer, tag, name, tls_done):
                return

    def _answer(self, peer: Peer, tag: bytes, name: str, tls_done: bool) -> bool:
        ok = tag + b" OK done\r\n"
        if name == "CAPABILITY":
            return peer.send(b"* CAPABILITY " + self._caps(tls_done) + b"\r\n" + ok)
        if name == "AUTHENTICATE":
            peer.send(b"+ \r\n")
            answer = peer.readline().strip()
            try:
                self.received.append(base64.b64decode(answer, validate=True))
            except ValueError:
                return peer.send(tag + b" BAD not base64\r\n")
            return peer.send(ok)
        if name in ("SELECT", "EXAMINE"):
            return peer.send(
                b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n" + ok
            )
        if name in ("LIST", "XLIST"):
            return peer.send(b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n' + ok)
        if name == "UID SEARCH":
            return peer.send(b"* SEARCH 1\r\n" + ok)
        if name == "LOGOUT":
            peer.send(b"* BYE bye\r\n" + ok)
            return False
        return peer.send(ok)
