"""FakeSmtpServer behaves as real servers do (Postfix, Exim) where clients can tell."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mailbridge import AuthenticationError, SmtpSettings
from mailbridge.smtp import SmtpConnection
from mailbridge.testing import FakeSmtpServer

from .conftest import PASSWORD, USER


def test_a_rejected_login_is_ended_with_quit() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        server.login_reply = "535 5.7.8 Username and Password not accepted"
        with pytest.raises(AuthenticationError):
            SmtpConnection.open(server.smtp_settings())
        assert server.quits == 1


def test_a_rejected_login_over_implicit_tls_is_ended_with_quit() -> None:
    with FakeSmtpServer(tls="implicit", users={USER: PASSWORD}) as server:
        with pytest.raises(AuthenticationError):
            SmtpConnection.open(server.smtp_settings(password="wrong"))
        assert server.quits == 1


def test_smtp_settings_with_only_a_password_keeps_the_user() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        settings = server.smtp_settings(password="wrong")
        assert settings.username == USER
        assert settings.password is not None and settings.password.reveal() == "wrong"
        assert server.smtp_settings(username=USER).password.reveal() == PASSWORD  # type: ignore[union-attr]


def test_no_auth_is_advertised_without_accounts() -> None:
    with FakeSmtpServer(tls="none") as server, smtplib.SMTP(server.host, server.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")
    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        with smtplib.SMTP(server.host, server.port) as client:
            client.starttls(context=server.client_ssl_context())
            client.ehlo()
            assert client.has_extn("auth")


def test_login_prompts_are_the_usual_ones() -> None:
    with (
        FakeSmtpServer(users={USER: PASSWORD}) as server,
        smtplib.SMTP(server.host, server.port) as client,
    ):
        client.starttls(context=server.client_ssl_context())
        client.ehlo()
        code, prompt = client.docmd("AUTH", "LOGIN")
        assert (code, prompt) == (334, b"VXNlcm5hbWU6")  # "Username:"
        code, prompt = client.docmd(base64.b64encode(USER.encode()).decode())
        assert (code, prompt) == (334, b"UGFzc3dvcmQ6")  # "Password:"
        code, _ = client.docmd(base64.b64encode(PASSWORD.encode()).decode())
        assert code == 235


def test_data_after_a_non_last_bdat_is_refused() -> None:
    with FakeSmtpServer(tls="none", chunking=True) as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            stream = sock.makefile("rwb")
            assert stream.readline().startswith(b"220")
            stream.write(b"EHLO client.test\r\n")
            stream.flush()
            while not stream.readline().startswith(b"250 "):
                pass
            for line in (b"MAIL FROM:<a@example.test>", b"RCPT TO:<b@example.test>"):
                stream.write(line + b"\r\n")
                stream.flush()
                assert stream.readline().startswith(b"250")
            stream.write(b"BDAT 6\r\nab\r\n\r\n")
            stream.flush()
            assert stream.readline().startswith(b"250")
            stream.write(b"DATA\r\n")
            stream.flush()
            assert stream.readline().startswith(b"503")  # RFC 3030 section 3
            stream.write(b"BDAT 0 LAST\r\n")
            stream.flush()
            assert stream.readline().startswith(b"250")
        assert [m.data for m in server.messages] == [b"ab\r\n\r\n"]


def test_long_lines_are_accepted_as_real_servers_do() -> None:
    line = b"x" * 5000
    data = b"Subject: long\r\n\r\n" + line + b"\r\n"
    with FakeSmtpServer(tls="none") as server, smtplib.SMTP(server.host, server.port) as client:
        refused = client.sendmail("a@example.test", ["b@example.test"], data)
        assert refused == {}
        assert server.messages[0].data == data


def test_test_certificates_carry_a_common_name() -> None:
    with FakeSmtpServer(tls="implicit") as server:
        context = server.client_ssl_context()
        with socket.create_connection((server.host, server.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                certificate = tls.getpeercert()
    subject = dict(item[0] for item in certificate["subject"])  # type: ignore[index, misc]
    assert subject["commonName"] == "localhost"
    assert ("IP Address", "127.0.0.1") in certificate["subjectAltName"]  # type: ignore[operator]
    assert isinstance(context, ssl.SSLContext)


def test_logins_log_no_deprecation_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mail.log")
    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        SmtpConnection.open(server.smtp_settings()).quit()
        assert server.quits == 1
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_servers_never_stopped_leave_no_directory() -> None:
    script = (
        "from mailbridge.testing import FakeImapServer, FakeSmtpServer\n"
        "from mailbridge.testing._autoconfig import FakeAutoconfigServer\n"
        "for server in (FakeSmtpServer(), FakeImapServer(), FakeAutoconfigServer()):\n"
        "    print(server.start().ca_file.parent, flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    directories = [Path(line) for line in done.stdout.split()]
    assert len(directories) == 3
    for directory in directories:
        assert directory.name.startswith("mailbridge-")
        assert not directory.exists()


def test_a_rejected_login_ends_tls_with_close_notify() -> None:
    """A scripted implicit-TLS server: after 535 and QUIT it must see TLS close_notify."""
    import threading

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", common_name="127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    seen: list[bytes] = []
    ending: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        tls = context.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
        tls.settimeout(5)
        stream = tls.makefile("rwb")
        stream.write(b"220 scripted ESMTP\r\n")
        stream.flush()
        replies = {b"EHLO": b"250-scripted\r\n250 AUTH PLAIN\r\n", b"AUTH": b"535 5.7.8 no\r\n",
                   b"QUIT": b"221 2.0.0 bye\r\n"}  # fmt: skip
        for _ in range(3):
            line = stream.readline()
            seen.append(line.split(b" ")[0].strip())
            stream.write(replies.get(seen[-1], b"500 what\r\n"))
            stream.flush()
        try:
            ending.append("close_notify" if tls.recv(1) == b"" else "data")
        except ssl.SSLEOFError:
            ending.append("no close_notify")
        except OSError as exc:
            ending.append(type(exc).__name__)
        finally:
            with contextlib.suppress(OSError):
                tls.unwrap().close()  # answer the client's close_notify
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        ca_file = Path(tempfile.mkdtemp()) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        settings = SmtpSettings("127.0.0.1", listener.getsockname()[1], "implicit_tls",
                                username=USER, password=PASSWORD, ca_file=ca_file,
                                command_timeout=5.0, connect_timeout=5.0)  # fmt: skip
        with pytest.raises(AuthenticationError):
            SmtpConnection.open(settings)
    finally:
        thread.join(10)
        listener.close()
        shutil.rmtree(ca_file.parent, ignore_errors=True)
    assert seen == [b"EHLO", b"AUTH", b"QUIT"]
    assert ending == ["close_notify"]
