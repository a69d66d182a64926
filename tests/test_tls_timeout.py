"""A server that accepts TCP but never speaks TLS: one typed time-out, named as TLS."""

from __future__ import annotations

import pickle
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mailbridge import (
    DeliveryTimeout,
    ImapSettings,
    SmtpSettings,
    TlsError,
    TlsHandshakeTimeout,
)
from mailbridge.diagnosis import Category
from mailbridge.imap import open_imap
from mailbridge.smtp.connection import SmtpConnection

TIMEOUT = 1.0


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and then says nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def run() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def _check(error: BaseException, port: int, started: float) -> None:
    assert type(error) is TlsHandshakeTimeout
    assert isinstance(error, TlsError) and isinstance(error, DeliveryTimeout)
    assert isinstance(error, TimeoutError)
    assert str(error) == f"the TLS handshake with 127.0.0.1:{port} timed out after 1 s"
    assert error.temporary and error.diagnosis.category == Category.TLS_HANDSHAKE
    assert time.monotonic() - started < TIMEOUT + 2
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TlsHandshakeTimeout and str(copy) == str(error)


def test_smtp_implicit_tls_handshake_time_out(silent_port: int) -> None:
    settings = SmtpSettings(
        "127.0.0.1", silent_port, security="implicit_tls", connect_timeout=TIMEOUT
    )
    started = time.monotonic()
    with pytest.raises(TlsError) as caught:
        SmtpConnection.open(settings)
    _check(caught.value, silent_port, started)


def test_imap_implicit_tls_handshake_time_out(silent_port: int) -> None:
    settings = ImapSettings(
        "127.0.0.1", silent_port, security="implicit_tls", connect_timeout=TIMEOUT
    )
    started = time.monotonic()
    with pytest.raises(DeliveryTimeout) as caught:
        open_imap(settings)
    _check(caught.value, silent_port, started)
