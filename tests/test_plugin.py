"""The pytest plugin, as an application's test suite sees it."""

from __future__ import annotations

import threading

import pytest

from mailbridge import DeliveryClient, DocumentEmail, Security
from mailbridge.testing import FakeSmtpServer

pytest_plugins = ["pytester"]


def test_delivery_client_is_wired_to_smtp_server(
    delivery_client: DeliveryClient, smtp_server: FakeSmtpServer
) -> None:
    assert smtp_server.messages == []
    delivery_client.send(DocumentEmail(to="jane@customer.example", subject="s", body="b"))
    (received,) = smtp_server.messages
    assert received.user == "tenant@example.test"
    assert received.message["From"] == "Tenant GmbH <tenant@example.test>"


@pytest.mark.smtp_server(tls="implicit", users={"me@example.test": "pw"})
def test_marker_configures_the_server(smtp_server: FakeSmtpServer) -> None:
    assert smtp_server.security is Security.IMPLICIT_TLS
    assert smtp_server.smtp_settings().username == "me@example.test"


def test_fixtures_leave_no_thread_or_port(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from mailbridge import DocumentEmail

        def test_app(delivery_client, smtp_server, autoconfig_server):
            delivery_client.send(DocumentEmail(to="a@customer.example", subject="s", body="b"))
            assert len(smtp_server.messages) == 1
            assert autoconfig_server.port
        """
    )
    before = set(threading.enumerate())
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == []


def test_imap_server_fixture_and_wired_client(
    imap_server,
    delivery_client: DeliveryClient,  # type: ignore[no-untyped-def]
) -> None:
    assert delivery_client.imap == imap_server.imap_settings()
    assert {"INBOX", "Sent"} <= set(imap_server.folders())
