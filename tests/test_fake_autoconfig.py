from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from mailbridge import Security, SmtpSettings
from mailbridge.testing._autoconfig import FakeAutoconfigServer, client_config_xml


def _get(server: FakeAutoconfigServer, host: str, path: str, timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(server.base_url + path, headers={"Host": host})
    context = server.client_ssl_context() if server.tls else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        body: bytes = response.read()
        return body


@pytest.fixture
def autoconfig() -> FakeAutoconfigServer:
    with FakeAutoconfigServer() as server:
        yield server  # type: ignore[misc]


def test_serves_documents_by_host_and_path(autoconfig: FakeAutoconfigServer) -> None:
    smtp = SmtpSettings("smtp.example.test", 587, Security.STARTTLS)
    imap = SmtpSettings("imap.example.test", 993, Security.IMPLICIT_TLS)
    autoconfig.add_config("example.test", client_config_xml("example.test", smtp=smtp, imap=imap))
    for host, path in [
        ("autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=a%40example.test"),
        ("example.test", "/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]:
        root = ET.fromstring(_get(autoconfig, host, path))
        outgoing = root.find("emailProvider/outgoingServer")
        assert outgoing is not None
        assert outgoing.findtext("hostname") == "smtp.example.test"
        assert outgoing.findtext("socketType") == "STARTTLS"
        assert root.findtext("emailProvider/incomingServer/port") == "993"
    first = autoconfig.requests[0]
    assert first.host == "autoconfig.example.test"
    assert first.query == {"emailaddress": ["a@example.test"]}
    assert first.status == 200 and first.tls


def test_unknown_domain_is_404(autoconfig: FakeAutoconfigServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(autoconfig, "autoconfig.nowhere.test", "/mail/config-v1.1.xml")
    assert info.value.code == 404


def test_faults(autoconfig: FakeAutoconfigServer) -> None:
    autoconfig.add_config("example.test", client_config_xml("example.test"))
    autoconfig.fail("example.test", 503)
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(autoconfig, "example.test", "/mail/config-v1.1.xml")
    assert info.value.code == 503
    assert _get(autoconfig, "autoconfig.example.test", "/mail/config-v1.1.xml")
    autoconfig.delay_seconds = 0.6
    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        _get(autoconfig, "autoconfig.example.test", "/mail/config-v1.1.xml", timeout=0.2)
    assert time.monotonic() - started < 0.6
    autoconfig.delay_seconds = 0
    autoconfig.status = 500
    with pytest.raises(urllib.error.HTTPError):
        _get(autoconfig, "autoconfig.example.test", "/mail/config-v1.1.xml")


def test_certificate_is_verified(autoconfig: FakeAutoconfigServer) -> None:
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(
            autoconfig.base_url + "/mail/config-v1.1.xml",
            timeout=5,
            context=ssl.create_default_context(),
        )
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_mode_and_clean_stop() -> None:
    server = FakeAutoconfigServer(tls=False).start()
    server.add_config("example.test", client_config_xml("example.test"))
    assert b"clientConfig" in _get(server, "example.test", "/mail/config-v1.1.xml")
    port = server.port
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
