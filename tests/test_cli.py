from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailbridge import cli
from mailbridge.cli import main
from mailbridge.testing import FakeSmtpServer

from .conftest import INVOICE_PDF, PASSWORD, USER


def _server_args(server: FakeSmtpServer, security: str = "starttls") -> list[str]:
    return [
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--security",
        security,
        "--user",
        USER,
        "--ca-file",
        str(server.ca_file),
        "--timeout",
        "2",
    ]


def test_test_connection_ok(
    smtp_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILBRIDGE_PASSWORD", PASSWORD)
    assert main(["test-connection", *_server_args(smtp_server)]) == 0
    out = capsys.readouterr().out
    assert "The connection works." in out
    assert PASSWORD not in out


def test_test_connection_suggests_the_working_mode(
    smtp_server: FakeSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SMTP_PW", PASSWORD)
    code = main(["test-connection", *_server_args(smtp_server, "ssl"), "--password-env", "SMTP_PW"])
    out = capsys.readouterr().out
    assert code == 1
    assert "choose STARTTLS" in out
    assert "Working setting: --security starttls" in out


def test_wrong_password_exit_code(
    smtp_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILBRIDGE_PASSWORD", "nope-" + PASSWORD)
    assert main(["test-connection", *_server_args(smtp_server)]) == 1
    captured = capsys.readouterr()
    assert "rejected" in captured.out
    assert PASSWORD not in captured.out + captured.err


def test_send_with_attachment_and_partial_refusal(
    smtp_server: FakeSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pdf = tmp_path / "Invoice-7.pdf"
    pdf.write_bytes(INVOICE_PDF)
    smtp_server.refuse_recipient("gone@example.test")
    monkeypatch.setenv("MAILBRIDGE_PASSWORD", PASSWORD)
    code = main(
        [
            "send",
            *_server_args(smtp_server),
            "--from",
            USER,
            "--name",
            "Acme GmbH",
            "--to",
            "a@example.test, gone@example.test",
            "--subject",
            "Invoice 7",
            "--body",
            "Attached.",
            "--attach",
            str(pdf),
        ]
    )
    out = capsys.readouterr().out
    assert code == 3
    assert "accepted  a@example.test" in out
    assert "refused   gone@example.test: 550" in out
    (received,) = smtp_server.messages
    (part,) = list(received.message.iter_attachments())
    assert part.get_filename() == "Invoice-7.pdf"


def test_bad_input_is_a_usage_error(
    smtp_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILBRIDGE_PASSWORD", PASSWORD)
    code = main(
        [
            "send",
            *_server_args(smtp_server),
            "--from",
            USER,
            "--to",
            "not-an-address",
            "--subject",
            "s",
            "--body",
            "b",
        ]
    )
    assert code == 2
    assert "to: invalid address 'not-an-address'" in capsys.readouterr().err


def test_password_is_never_an_argument_and_no_tty_means_no_prompt(
    smtp_server: FakeSmtpServer,
) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbridge",
            "test-connection",
            *_server_args(smtp_server),
            "--password-env",
            "MAILBRIDGE_TEST_UNSET",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "set MAILBRIDGE_TEST_UNSET or run in a terminal" in run.stderr


def test_demo_runs_end_to_end() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "The connection works." in run.stdout
    assert "Invoice-2026-0042.pdf (application/pdf" in run.stdout
    assert "refused     old-address@customer.example: 550 5.1.1" in run.stdout
    assert "Bcc header  absent" in run.stdout


@pytest.mark.dns_server(
    zones={
        "acme.example": {
            "@": {"TXT": '"v=spf1 mx -all"'},
            "_dmarc": {"TXT": '"v=DMARC1; p=reject"'},
        },
        "app.example": {"spf": {"TXT": '"v=spf1 ip4:192.0.2.0/24 -all"'}},
    }
)
def test_spf_and_dmarc_commands(dns_server, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    dns = ["--nameserver", "127.0.0.1", "--dns-port", str(dns_server.port), "--dns-timeout", "1"]
    assert main(["spf", "check", "acme.example", "--ip", "192.0.2.1", *dns]) == 1
    assert "fail: matched -all" in capsys.readouterr().out
    assert main(["spf", "plan", "acme.example", "--include", "spf.app.example", *dns]) == 0
    assert "publish: v=spf1 include:spf.app.example mx -all" in capsys.readouterr().out
    assert main(["dmarc", "acme.example", *dns]) == 0
    assert "policy reject" in capsys.readouterr().out


@pytest.mark.dns_server(zones={"acme.example": {"@": {"MX": "10 aspmx.l.google.com."}}})
def test_discover_and_providers_commands(dns_server, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import json

    dns = ["--nameserver", "127.0.0.1", "--dns-port", str(dns_server.port), "--dns-timeout", "1"]
    assert main(["discover", "billing@acme.example", "--no-guess", "--timeout", "3", *dns]) == 0
    out = capsys.readouterr().out
    assert "smtp.gmail.com:465" in out and "found via MX aspmx.l.google.com" in out
    assert (
        main(["discover", "billing@acme.example", "--json", "--no-guess", "--timeout", "3", *dns])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] == "google-workspace" and data["smtp"][0]["source"] == "mx"
    # how to sign in with OAuth2: for the address, and per candidate
    assert data["oauth2"]["issuer"] == "accounts.google.com"
    assert data["oauth2"]["scopes"] == ["https://mail.google.com/"]
    assert data["oauth2"]["token_url"] == "https://oauth2.googleapis.com/token"
    assert data["smtp"][0]["oauth2"] == data["oauth2"]
    assert main(["providers", "--domain", "gmx.de"]) == 0
    assert "mail.gmx.net:465" in capsys.readouterr().out
    assert main(["providers"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 40


@pytest.mark.dns_server(zones={"nothing.example": {}})
def test_setup_command_reports_what_it_tried(
    dns_server,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILBRIDGE_PASSWORD", "secret-for-setup")
    dns = ["--nameserver", "127.0.0.1", "--dns-port", str(dns_server.port), "--dns-timeout", "1"]
    assert main(["setup", "x@nothing.example", "--timeout", "2", *dns]) == 1
    out = capsys.readouterr().out
    assert "No mail server settings were found for x@nothing.example" in out
    assert "secret-for-setup" not in out


def _cli(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The command in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mailbridge", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        check=False,
    )


def _send_args(server: FakeSmtpServer, *extra: str, to: str = "jane@customer.example") -> list[str]:
    return [
        "send",
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--timeout",
        "2",
        "--from",
        "billing@acme.example",
        "--to",
        to,
        "--subject",
        "s",
        *extra,
    ]


def test_version_comes_from_the_package_metadata() -> None:
    from mailbridge._distribution import version

    run = _cli("--version")
    assert run.returncode == 0
    assert run.stdout == f"mailbridge {version()}\n"


def test_body_and_body_file_together_are_refused(tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("from the file")
    run = _cli(
        "send", "--host", "127.0.0.1", "--port", "1", "--from", "a@acme.example",
        "--to", "b@customer.example", "--subject", "s", "--body", "b", "--body-file", str(body),
    )  # fmt: skip
    assert run.returncode == 2
    assert "argument --body-file: not allowed with argument --body" in run.stderr


def test_bad_ip_is_a_usage_error_without_traceback() -> None:
    run = _cli("spf", "check", "acme.example", "--ip", "not-an-ip", "--nameserver", "127.0.0.1")
    assert run.returncode == 2
    assert "argument --ip: not an IPv4 or IPv6 address: 'not-an-ip'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "body_file: cannot read {path}: No such file or directory"),
        (b"\xff\xfe not UTF-8", "body_file: {path} is not UTF-8 text"),
        ("dir", "body_file: cannot read {path}: Is a directory"),
    ],
    ids=["missing", "binary", "directory"],
)
def test_body_file_problems_are_explained(
    smtp_server: FakeSmtpServer, tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "body.txt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    run = _cli(*_send_args(smtp_server, "--body-file", str(path)))
    assert run.returncode == 2
    assert run.stderr == f"mailbridge: {message.format(path=path)}\n"
    assert smtp_server.messages == []


def _ca_cases() -> list[object]:
    cases: list[object] = ["not-a-certificate", "directory", "missing"]
    reason = "root reads every file" if os.geteuid() == 0 else ""
    cases.append(pytest.param("unreadable", marks=pytest.mark.skipif(bool(reason), reason=reason)))
    return cases


@pytest.mark.parametrize("command", ["send", "test-connection"])
@pytest.mark.parametrize("case", _ca_cases())
def test_bad_ca_file_is_explained(
    smtp_server: FakeSmtpServer, tmp_path: Path, command: str, case: str
) -> None:
    ca_file = tmp_path / "ca.pem"
    if case == "directory":
        ca_file.mkdir()
    elif case != "missing":
        ca_file.write_text("this is not a PEM certificate\n")
    if case == "unreadable":
        ca_file.write_bytes(smtp_server.ca_file.read_bytes())
        ca_file.chmod(0)
    args = _send_args(smtp_server, "--body", "b")[1:] if command == "send" else _server(smtp_server)
    run = _cli(command, *args, "--ca-file", str(ca_file))
    assert "Traceback" not in run.stderr
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith(f"mailbridge: ca_file: {ca_file} ")
    assert smtp_server.messages == []


def _server(server: FakeSmtpServer) -> list[str]:
    return ["--host", server.host, "--port", str(server.port), "--timeout", "2"]


def test_closed_pipe_ends_quietly() -> None:
    """`mailbridge providers | head -1`: the reader is gone before the output ends."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = _cli("providers", stdout=write_end)
    finally:
        os.close(write_end)
    assert run.returncode == 1
    assert run.stderr == ""


def test_interrupt_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_providers", interrupted)
    assert main(["providers"]) == 130
    assert capsys.readouterr().err == ""


def test_a_bug_is_one_line_and_its_traceback_is_one_flag_away(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def buggy(args: object) -> int:
        raise RuntimeError("secret-in-the-message")

    monkeypatch.setattr(cli, "_cmd_providers", buggy)
    monkeypatch.delenv("MAILBRIDGE_DEBUG", raising=False)
    assert main(["providers"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("mailbridge: internal error (RuntimeError); this is a bug.")
    assert "--debug or MAILBRIDGE_DEBUG=1" in err
    assert "secret-in-the-message" not in err
    with pytest.raises(RuntimeError):
        main(["--debug", "providers"])
    monkeypatch.setenv("MAILBRIDGE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["providers"])


def test_os_error_about_a_file_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreadable(args: object) -> int:
        raise PermissionError(13, "Permission denied", "/srv/registry.toml")

    monkeypatch.setattr(cli, "_cmd_providers", unreadable)
    assert main(["providers"]) == 2
    assert capsys.readouterr().err == "mailbridge: /srv/registry.toml: Permission denied\n"


@pytest.mark.parametrize(
    "to",
    [
        '"=?utf-8?q?ACME=0D=0AReply-To:_x@evil.example=0D=0A?=" <jane@customer.example>',
        "=?utf-8?q?b=C3=BCro=0D=0A?=@acme.example",
    ],
    ids=["display-name", "local-part"],
)
def test_encoded_line_breaks_in_to_are_a_usage_error(smtp_server: FakeSmtpServer, to: str) -> None:
    """On Debian's Python 3.11.2 the first printed a ValueError traceback."""
    run = _cli(*_send_args(smtp_server, "--body", "b", to=to))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(("mailbridge: to: ", "mailbridge: message: line breaks"))
    assert "Traceback" not in run.stderr
    assert smtp_server.messages == []
