"""A connection that breaks during LOGIN or AUTHENTICATE is that failure, never "wrong password"."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from mailbridge.diagnosis import Category
from mailbridge.errors import (
    AuthenticationError,
    DeliveryError,
    ImapConnectionLost,
    ImapLimitExceeded,
    ImapTimeout,
)
from mailbridge.imap import ImapLimits, close_imap, open_imap, probe_imap
from mailbridge.testing._imap_hostile import HostileImapServer, Peer

LIMITS = ImapLimits(max_lines=1000)


def _close(peer: Peer, tag: bytes) -> None:
    peer.sock.shutdown(socket.SHUT_RDWR)


def _silence(peer: Peer, tag: bytes) -> None:
    peer.server.stopping.wait(5)  # the client gives up first; stop() ends the wait


def _flood(peer: Peer, tag: bytes) -> None:
    peer.stream(b"* OK still thinking\r\n", times=20_000)


MODES: dict[str, tuple[Callable[[Peer, bytes], None], type[DeliveryError], Category]] = {
    "close": (_close, ImapConnectionLost, Category.CONNECTION_LOST),
    "silence": (_silence, ImapTimeout, Category.TIMEOUT),
    "flood": (_flood, ImapLimitExceeded, Category.PROTOCOL),
}
# An ASCII password goes with LOGIN; a non-ASCII one with AUTHENTICATE PLAIN.
PASSWORDS = {"LOGIN": "secret-pw", "AUTHENTICATE": "sécret-pw"}


@pytest.mark.parametrize("command", ["LOGIN", "AUTHENTICATE"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_broken_login_is_the_wire_failure(mode: str, command: str) -> None:
    script, expected, category = MODES[mode]
    with HostileImapServer({command: script}) as server:
        settings = server.settings(password=PASSWORDS[command], command_timeout=0.5)
        with pytest.raises(DeliveryError) as caught:
            close_imap(open_imap(settings, limits=LIMITS))
    assert type(caught.value) is expected, repr(caught.value)
    assert not isinstance(caught.value, AuthenticationError)
    assert caught.value.diagnosis.category == category
    assert PASSWORDS[command] not in str(caught.value)


@pytest.mark.parametrize("mode", list(MODES))
def test_the_connection_test_does_not_blame_the_password(mode: str) -> None:
    script, _, category = MODES[mode]
    with HostileImapServer({"LOGIN": script}) as server:
        report = probe_imap(
            server.settings(command_timeout=0.5), try_alternative=False, limits=LIMITS
        )
    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.category == category
    assert "password" not in report.diagnosis.summary.lower()
    assert not any("app password" in hint for hint in report.diagnosis.hints)


def test_a_refused_login_is_still_an_authentication_error() -> None:
    def refuse(peer: Peer, tag: bytes) -> None:
        peer.send(tag + b" NO [AUTHENTICATIONFAILED] invalid credentials\r\n")

    with HostileImapServer({"LOGIN": refuse}) as server:
        with pytest.raises(AuthenticationError) as caught:
            open_imap(server.settings())
    assert caught.value.diagnosis.category == Category.AUTH_FAILED
