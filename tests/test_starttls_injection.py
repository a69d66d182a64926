"""STARTTLS command injection (CVE-2011-0411 and kin): nothing sent before TLS is trusted."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import trustme

from mailbridge import DeliveryClient, DocumentEmail, SmtpSettings


class ScriptedServer:
    """A tiny SMTP server that injects replies into the plaintext stream after STARTTLS."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(self.context)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.seen_after_tls: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        reader = conn.makefile("rb")
        conn.sendall(b"220 scripted ESMTP\r\n")
        reader.readline()  # EHLO
        conn.sendall(b"250-scripted\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        reader.readline()  # STARTTLS
        # The attack: extra replies in the same packet as the 220, before the handshake.
        conn.sendall(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        tls = self.context.wrap_socket(conn, server_side=True)
        reader = tls.makefile("rb")
        for _ in range(20):
            line = reader.readline().decode().strip()
            if not line:
                break
            self.seen_after_tls.append(line)
            if line.startswith("EHLO"):
                tls.sendall(b"250-scripted\r\n250 PIPELINING\r\n")
            elif line.startswith(("MAIL", "RCPT")):
                pass  # pipelined: answered together after DATA
            elif line == "DATA":
                tls.sendall(b"250 sender ok\r\n250 rcpt ok\r\n354 go\r\n")
                while reader.readline() not in (b".\r\n", b""):
                    pass
                tls.sendall(b"250 queued\r\n")
            elif line == "QUIT":
                tls.sendall(b"221 bye\r\n")
                break
        tls.close()

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def test_replies_injected_before_the_handshake_are_discarded(scripted: ScriptedServer) -> None:
    context = ssl.create_default_context()
    scripted.ca.configure_trust(context)
    settings = SmtpSettings(
        "127.0.0.1", scripted.port, "starttls", ssl_context=context, command_timeout=5
    )
    with DeliveryClient.own_smtp("billing@acme.example", settings) as client:
        result = client.send(DocumentEmail(to="jane@customer.example", subject="s", body="b"))
    # Had the injected "250 AUTH PLAIN" been read as the EHLO reply, every later reply
    # would be off by one and the message would not have been accepted.
    assert result.reply.text == "queued"
    assert scripted.seen_after_tls[0].startswith("EHLO")  # re-EHLO after the handshake


def test_server_that_agrees_to_starttls_then_speaks_plaintext() -> None:
    """Not a port mix-up: the diagnosis must not advise switching to STARTTLS."""
    from mailbridge import Category
    from mailbridge.smtp import probe_smtp

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            reader = conn.makefile("rb")
            conn.sendall(b"220 broken ESMTP\r\n")
            reader.readline()
            conn.sendall(b"250-broken\r\n250 STARTTLS\r\n")
            reader.readline()
            conn.sendall(b"220 go ahead\r\n")
            conn.sendall(b"250 but no TLS here, sorry\r\n")
            conn.recv(4096)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        settings = SmtpSettings(
            "127.0.0.1", listener.getsockname()[1], "starttls", command_timeout=2
        )
        report = probe_smtp(settings, try_alternative=False)
    finally:
        thread.join(10)
        listener.close()
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.TLS_HANDSHAKE
    assert report.steps[-1].name == "starttls"
