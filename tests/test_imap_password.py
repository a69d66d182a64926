"""Non-ASCII IMAP passwords: AUTHENTICATE PLAIN in UTF-8 (RFC 4616, 6855), never the secret."""

from __future__ import annotations

import base64
import logging
import traceback

import pytest

from mailbridge import ImapSettings
from mailbridge.diagnosis import Category
from mailbridge.errors import AuthenticationError, MailbridgeError
from mailbridge.imap import close_imap, open_imap, probe_imap
from mailbridge.testing import FakeImapServer
from mailbridge.testing._imap_hostile import HostileImapServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import CARLA, CARLA_PASSWORD

USER = "tenant@example.test"
WRONG = "fälsch€"


def _leaks(error: BaseException, secret: str) -> bool:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    return any(secret in text for text in texts)


def test_a_non_ascii_password_logs_in_with_authenticate_plain() -> None:
    with FakeImapServer(users={USER: CARLA_PASSWORD}) as server:
        client = open_imap(server.imap_settings())
        close_imap(client)
        report = probe_imap(server.imap_settings())
    assert report.ok


def test_a_wrong_non_ascii_password_is_refused_without_showing_it() -> None:
    with FakeImapServer(users={USER: CARLA_PASSWORD}) as server:
        with pytest.raises(AuthenticationError) as caught:
            open_imap(server.imap_settings(USER, WRONG))
    assert caught.value.diagnosis.category == Category.AUTH_FAILED
    assert not _leaks(caught.value, WRONG)


def test_without_auth_plain_the_error_says_what_is_needed() -> None:
    with HostileImapServer(capabilities=b"IMAP4rev1") as server:
        settings = server.settings(password=CARLA_PASSWORD)
        with pytest.raises(AuthenticationError, match="AUTHENTICATE PLAIN") as caught:
            open_imap(settings)
        report = probe_imap(settings, try_alternative=False)  # reports, never raises
    assert caught.value.diagnosis.category == Category.AUTH_MECHANISM_UNSUPPORTED
    assert not _leaks(caught.value, CARLA_PASSWORD)
    assert not report.ok and report.error is not None
    assert not _leaks(report.error, CARLA_PASSWORD)
    assert not any(b"LOGIN" in line for line in server.received)  # never sent


def test_the_plain_response_is_utf8() -> None:
    with HostileImapServer() as server:
        close_imap(open_imap(server.settings(password=CARLA_PASSWORD)))
    assert f"\0{USER}\0{CARLA_PASSWORD}".encode() in server.received


@pytest.mark.realserver
def test_dovecot_accepts_a_non_ascii_password(real_servers: RealMailServers) -> None:
    settings = ImapSettings(
        real_servers.host, real_servers.imaps_port, "implicit_tls", username=CARLA,
        password=CARLA_PASSWORD, ca_file=real_servers.ca_file,
    )  # fmt: skip
    client = open_imap(settings)
    try:
        assert client.select_folder("INBOX")
    finally:
        close_imap(client)
    with pytest.raises(MailbridgeError) as caught:
        open_imap(ImapSettings(**{**_fields(settings), "password": WRONG}))
    assert isinstance(caught.value, AuthenticationError)
    assert not _leaks(caught.value, WRONG)


def _fields(settings: ImapSettings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "username": settings.username,
        "ca_file": settings.ca_file,
    }


def test_debug_logs_never_carry_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    blob = base64.b64encode(f"\0{USER}\0{CARLA_PASSWORD}".encode()).decode()
    with FakeImapServer(users={USER: CARLA_PASSWORD}) as server:
        close_imap(open_imap(server.imap_settings()))
    assert "AUTHENTICATE" in caplog.text  # the wire was logged
    assert CARLA_PASSWORD not in caplog.text and blob not in caplog.text
