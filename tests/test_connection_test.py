"""`DeliveryClient.test_connection()`: every failure category with its own advice."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from mailbridge import Category, DeliveryClient, Security, SmtpSettings
from mailbridge.smtp import probe_smtp
from mailbridge.testing import FakeSmtpServer

from .conftest import PASSWORD, USER


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for sock in accepted:
        sock.close()
    listener.close()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_working_connection_lists_every_step(smtp_server: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        report = client.test_connection()
    assert report.ok and report.diagnosis is None
    assert [step.name for step in report.steps] == [
        "resolve",
        "connect",
        "greeting",
        "ehlo",
        "starttls",
        "ehlo",
        "auth",
    ]
    assert all(step.ok and step.seconds >= 0 for step in report.steps)
    assert "PIPELINING" in report.extensions
    assert "The connection works." in str(report)
    assert smtp_server.messages == []


def test_host_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    report = probe_smtp(SmtpSettings("smtp.no-such-host.example", 587, "starttls"))
    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.HOST_NOT_FOUND
    assert "smtp.no-such-host.example" in report.diagnosis.summary
    assert report.steps[-1].name == "resolve" and not report.steps[-1].ok


def test_connection_refused() -> None:
    report = probe_smtp(SmtpSettings("127.0.0.1", _closed_port(), "starttls"))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.CONNECTION_REFUSED
    assert any("587" in hint for hint in report.diagnosis.hints)


def test_silent_server_times_out(silent_port: int) -> None:
    settings = SmtpSettings(
        "127.0.0.1", silent_port, "starttls", command_timeout=0.5, connect_timeout=0.5
    )
    report = probe_smtp(settings)
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.TIMEOUT
    assert report.alternative is None  # implicit TLS was tried too and did not work either


def test_implicit_tls_spoken_to_a_starttls_port(smtp_server: FakeSmtpServer) -> None:
    report = probe_smtp(smtp_server.smtp_settings(security=Security.IMPLICIT_TLS))
    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.EXPECTED_PLAINTEXT
    assert "choose STARTTLS" in report.diagnosis.summary
    assert report.alternative is not None
    assert report.alternative.security is Security.STARTTLS
    assert probe_smtp(report.alternative).ok


def test_starttls_spoken_to_an_implicit_tls_port() -> None:
    with FakeSmtpServer(tls="implicit", users={USER: PASSWORD}) as server:
        settings = server.smtp_settings(security=Security.STARTTLS, command_timeout=1.0)
        report = probe_smtp(settings)
        assert report.diagnosis is not None
        assert report.diagnosis.category == Category.EXPECTED_IMPLICIT_TLS
        assert "choose SSL/TLS" in report.diagnosis.summary
        assert report.alternative is not None
        assert report.alternative.security is Security.IMPLICIT_TLS
        assert "worked" in report.diagnosis.hints[0]


def test_certificate_problems() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, certificate_hostnames=["mail.other.example"]) as s:
        report = probe_smtp(s.smtp_settings())
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.CERTIFICATE_NAME_MISMATCH
    with FakeSmtpServer(users={USER: PASSWORD}) as s:
        report = probe_smtp(s.smtp_settings(ca_file=None))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.CERTIFICATE_INVALID
    assert any("ca_file" in hint for hint in report.diagnosis.hints)


def test_starttls_not_offered() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, omit_starttls=True) as server:
        report = probe_smtp(server.smtp_settings())
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.STARTTLS_NOT_OFFERED
    assert report.steps[-1].name == "starttls"


def test_authentication_failed(smtp_server: FakeSmtpServer) -> None:
    report = probe_smtp(smtp_server.smtp_settings(username=USER, password="not-it"))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.AUTH_FAILED
    assert report.error is not None and report.error.reply is not None
    assert report.error.reply.code == 535
    assert "535 5.7.8" in str(report.error)


def test_auth_not_offered_without_tls(smtp_server: FakeSmtpServer) -> None:
    report = probe_smtp(smtp_server.smtp_settings(security=Security.NONE))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.AUTH_REQUIRES_TLS


def test_auth_not_offered_at_all() -> None:
    with FakeSmtpServer(auth_mechanisms=[]) as server:
        report = probe_smtp(server.smtp_settings(username=USER, password=PASSWORD))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.AUTH_NOT_OFFERED


def test_mechanism_not_supported() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, auth_mechanisms=["LOGIN"]) as server:
        report = probe_smtp(server.smtp_settings(auth_mechanism="PLAIN"))
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.AUTH_MECHANISM_UNSUPPORTED
