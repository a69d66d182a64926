"""`mailbridge oauth login` and `mailbridge setup --oauth`, against the fake authorization
server (msal and google-auth for real), the fake SMTP/IMAP servers and a fake DNS."""

from __future__ import annotations

import json
import threading
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge import Security
from mailbridge.cli import main
from mailbridge.oauth import SqliteTokenStore
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.providers import Endpoint, OAuth2Info, Provider, ProviderRegistry
from mailbridge.testing import (
    FakeAuthorizationServer,
    FakeDnsServer,
    FakeImapServer,
    FakeSmtpServer,
)

EMAIL = "anna@acme.example"


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(EMAIL,)) as server:
        yield server


def _microsoft(auth: FakeAuthorizationServer, db: Path, *more: str) -> list[str]:
    return [
        "--client-id",
        auth.public_client_id,
        "--authority",
        auth.authority(),
        "--oauth-ca-file",
        str(auth.ca_file),
        "--token-db",
        str(db),
        "--wait",
        "20",
        *more,
    ]


def _approve_soon(auth: FakeAuthorizationServer) -> threading.Timer:
    timer = threading.Timer(0.5, auth.approve_device_code)
    timer.start()
    return timer


def test_microsoft_login_prints_the_code_waits_and_saves_tokens(
    auth: FakeAuthorizationServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "tokens.sqlite3"
    timer = _approve_soon(auth)
    try:
        code = main(["oauth", "login", "--provider", "microsoft", "--tenant", "acme",
                     *_microsoft(auth, db)])  # fmt: skip
    finally:
        timer.cancel()
        timer.join()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "enter the code" in out and "/devicelogin" in out
    assert "Waiting for the sign-in ..." in err and "left" in err
    assert f"Signed in as {EMAIL}; tokens saved for tenant 'acme'" in out
    # The saved tokens work for the application afterwards.
    client = MicrosoftOAuth(
        auth.public_client_id,
        store=SqliteTokenStore(db),
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=auth.ca_file,
    )
    assert auth.accepts(EMAIL, client.token_provider("acme").token())


def test_google_login_opens_a_browser(
    auth: FakeAuthorizationServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "client.json"
    config.write_text(json.dumps(auth.google_client_config("installed")))
    browser = auth.browser()
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: browser(url) or True)
    code = main(
        ["oauth", "login", "--provider", "google", "--client-config", str(config),
         "--oauth-ca-file", str(auth.ca_file), "--token-db", str(tmp_path / "t.db"),
         "--email", EMAIL, "--wait", "20"]
    )  # fmt: skip
    browser.join()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Sign in in the browser" in out and auth.url in out
    assert f"Signed in as {EMAIL}" in out
    assert SqliteTokenStore(tmp_path / "t.db").load(EMAIL)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "microsoft"], "--client-id"),
        (["--provider", "google"], "--client-config"),
        (["--provider", "google", "--client-config", "{config}"], "not a Google OAuth client"),
        (["--provider", "google", "--client-config", "{missing}"], "No such file"),
    ],
)
def test_usage_errors_are_one_line(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MAILBRIDGE_OAUTH_CLIENT_ID", raising=False)
    (tmp_path / "bad.json").write_text('{"other": 1}')
    args = [a.format(config=tmp_path / "bad.json", missing=tmp_path / "nope.json") for a in args]
    code = main(["oauth", "login", *args, "--token-db", str(tmp_path / "t.db")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "t.db").exists()  # nothing created for a command that failed


def test_a_bad_authority_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["oauth", "login", "--provider", "microsoft", "--authority", "http://x.example/t"])
    assert info.value.code == 2
    assert "not an https:// URL" in capsys.readouterr().err


def test_missing_consent_is_diagnosed_without_a_traceback(
    auth: FakeAuthorizationServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth.require_consent = True
    timer = _approve_soon(auth)
    try:
        code = main(["oauth", "login", "--provider", "microsoft",
                     *_microsoft(auth, tmp_path / "t.db")])  # fmt: skip
    finally:
        timer.cancel()
        timer.join()
    err = capsys.readouterr().err
    assert code == 1
    assert "consent" in err.lower() and "Traceback" not in err


def test_an_unanswered_code_ends_after_the_wait(
    auth: FakeAuthorizationServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _microsoft(auth, tmp_path / "t.db")
    args[args.index("--wait") + 1] = "1.5"
    code = main(["oauth", "login", "--provider", "microsoft", *args])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "The sign-in was not finished in time" in err


def test_setup_with_oauth_proves_smtp_and_imap(
    auth: FakeAuthorizationServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with (
        FakeSmtpServer(tls="implicit", authorization_server=auth) as smtp,
        FakeImapServer(tls="implicit", users={}, authorization_server=auth) as imap,
        FakeDnsServer({"acme.example": {}}) as dns,
    ):
        acme = Provider(
            id="acme",
            name="Acme Mail",
            domains=("acme.example",),
            smtp=(Endpoint("localhost", smtp.port, Security.IMPLICIT_TLS),),
            imap=(Endpoint("localhost", imap.port, Security.IMPLICIT_TLS),),
            auth=("oauth2",),
            oauth2=OAuth2Info("login.acme.example", ("https://outlook.office.com/SMTP.Send",)),
        )
        registry = ProviderRegistry.default().register(acme)
        monkeypatch.setattr(ProviderRegistry, "default", classmethod(lambda cls: registry))
        cas = tmp_path / "cas.pem"
        cas.write_text(Path(smtp.ca_file).read_text() + Path(imap.ca_file).read_text())
        timer = _approve_soon(auth)
        try:
            code = main(
                ["setup", EMAIL, "--oauth", "microsoft", "--ca-file", str(cas), "--allow-private",
                 "--nameserver", "127.0.0.1", "--dns-port", str(dns.port), "--timeout", "5",
                 *_microsoft(auth, tmp_path / "t.db")]
            )  # fmt: skip
        finally:
            timer.cancel()
            timer.join()
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"SMTP: localhost:{smtp.port} implicit_tls as {EMAIL} (OAuth2)" in out
    assert f"IMAP: localhost:{imap.port}" in out


def test_a_failed_password_setup_offers_the_sign_in(
    auth: FakeAuthorizationServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with (
        FakeSmtpServer(tls="implicit", authorization_server=auth) as smtp,
        FakeDnsServer({"acme.example": {}}) as dns,
    ):
        smtp.login_reply = "550 5.7.30 Basic authentication is not supported for Client Submission."
        acme = Provider(
            id="acme",
            name="Acme Mail",
            domains=("acme.example",),
            smtp=(Endpoint("localhost", smtp.port, Security.IMPLICIT_TLS),),
            auth=("password", "oauth2"),
            oauth2=OAuth2Info(
                "login.microsoftonline.com", ("https://outlook.office.com/SMTP.Send",)
            ),
        )
        registry = ProviderRegistry.default().register(acme)
        monkeypatch.setattr(ProviderRegistry, "default", classmethod(lambda cls: registry))
        monkeypatch.setenv("MAILBRIDGE_PASSWORD", "old-password")
        code = main(
            ["setup", EMAIL, "--no-imap", "--ca-file", str(smtp.ca_file), "--allow-private",
             "--nameserver", "127.0.0.1", "--dns-port", str(dns.port), "--timeout", "5"]
        )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "Microsoft 365 no longer accepts passwords for sending" in out
    assert f"mailbridge setup {EMAIL} --oauth microsoft" in out
    assert "old-password" not in out


def test_without_authority_the_microsoft_directory_follows_the_address(tmp_path: Path) -> None:
    """Personal Outlook.com accounts cannot sign in at `organizations`, the old default."""
    from mailbridge._cli_oauth import _client
    from mailbridge.cli import build_parser

    args = build_parser().parse_args(
        ["oauth", "login", "--provider", "microsoft", "--client-id", "app",
         "--token-db", str(tmp_path / "tokens.db"), "--email", "jane@outlook.com"]
    )  # fmt: skip
    client = _client(args, "microsoft")
    assert isinstance(client, MicrosoftOAuth) and client.authority is None
    assert client.authority_for("jane@outlook.com").endswith("/consumers")
    assert client.authority_for("someone@unknown.example").endswith("/common")
