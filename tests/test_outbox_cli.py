"""`mailbridge outbox …`: migrate, a worker with a progress line, status, list, retry, purge."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.cli import main
from mailbridge.outbox import Outbox, State
from mailbridge.testing import FakeSmtpServer

RESOLVER = """
from mailbridge import DeliveryClient, SmtpSettings

def client_for(tenant):
    settings = SmtpSettings("127.0.0.1", {port}, "none")
    return DeliveryClient.own_smtp("billing@acme.example", settings)
"""


@pytest.fixture
def server() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer(tls="none") as running:
        yield running


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


@pytest.fixture
def resolver(tmp_path: Path, server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "outbox_cli_tenants.py").write_text(RESOLVER.format(port=server.port))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "outbox_cli_tenants:client_for"


def enqueue(url: str, server: FakeSmtpServer, count: int, to: str = "jane@c.example") -> list[str]:
    client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
    with Outbox.open(url) as outbox:
        return [
            outbox.enqueue(
                "acme", DocumentEmail(to=to, subject=f"No. {n}", body="."), client=client
            )
            for n in range(count)
        ]


def test_migrate_then_an_empty_status(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "migrate", "--url", url]) == 0
    assert capsys.readouterr().out == "outbox schema version 4\n"
    assert main(["outbox", "status", "--url", url]) == 0
    assert capsys.readouterr().out == "the outbox is empty\n"


def test_worker_drains_with_a_progress_line_and_the_commands_show_the_result(
    url: str,
    server: FakeSmtpServer,
    resolver: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.refuse_recipient("gone@c.example", "550 5.1.1 Mailbox unavailable")
    sent = enqueue(url, server, 3)
    [failed] = enqueue(url, server, 1, to="gone@c.example")
    code = main(["outbox", "worker", "--url", url, "--resolver", resolver, "--until-idle"])
    assert code == 0
    output = capsys.readouterr()
    assert "sent 3  retrying 0  failed 1  unknown 0  parked 0" in output.err.splitlines()[-1]
    assert server.delivered_count == 3
    assert main(["outbox", "status", "--url", url]) == 0
    assert capsys.readouterr().out.split() == ["failed", "1", "sent", "3"]
    assert main(["outbox", "status", "--url", url, failed]) == 0
    shown = capsys.readouterr().out
    assert "refused: Mailbox unavailable" in shown
    assert "last error: RecipientsRefused" in shown
    assert main(["outbox", "list", "--url", url, "--state", "sent"]) == 0
    assert sorted(line.split()[0] for line in capsys.readouterr().out.splitlines()) == sorted(sent)
    assert main(["outbox", "retry", "--url", url, sent[0]]) == 1
    assert "is sent; not retried" in capsys.readouterr().err
    assert main(["outbox", "retry", "--url", url, failed]) == 0
    assert main(["outbox", "cancel", "--url", url, failed]) == 0
    assert main(["outbox", "purge", "--url", url, "--older-than", "0s"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 message(s) deleted"
    with Outbox.open(url) as outbox:
        assert outbox.counts() == {}


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["outbox", "status"], 2, "give --url or set MAILBRIDGE_OUTBOX_URL"),
        (["outbox", "status", "--url", "mysql://x"], 2, "use sqlite:///"),
        (["outbox", "status", "--url", "{url}", "nope"], 1, "no message 'nope'"),
        (["outbox", "worker", "--url", "{url}", "--resolver", "nomodule"], 2, "package.module"),
        (["outbox", "worker", "--url", "{url}", "--resolver", "no_such_mod:f"], 2, "import"),
        (["outbox", "list", "--url", "{url}", "--state", "lost"], 2, "use one of queued"),
        (["outbox", "status", "--url", "{missing}"], 2, "no outbox at"),
        (["outbox", "list", "--url", "{missing}"], 2, "create it with `mailbridge outbox migrate`"),
        (["outbox", "worker", "--url", "{missing}", "--resolver", "os:getcwd"], 2, "no outbox"),
        (["outbox", "worker", "--url", "{url}", "--resolver", "{broken}:f"], 2, "RuntimeError"),
        (["outbox", "worker", "--url", "{url}", "--resolver", "{typo}:f"], 2, "invalid syntax"),
        (["outbox", "status", "--url", "{garbage}"], 2, "cannot open the SQLite outbox"),
        (["outbox", "status", "--url", "{alien}"], 1, "the outbox database failed: no such"),
    ],
)
def test_mistakes_are_one_line_without_traceback(
    argv: list[str],
    code: int,
    message: str,
    url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main(["outbox", "migrate", "--url", url])
    (tmp_path / "outbox_cli_broken.py").write_text("raise RuntimeError('vault token s3cret')\n")
    (tmp_path / "outbox_cli_typo.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    alien = tmp_path / "alien.db"  # says schema 4 (current), but its table is someone else's
    with sqlite3.connect(alien) as connection:
        connection.execute("CREATE TABLE outbox_schema (version INTEGER)")
        connection.execute("INSERT INTO outbox_schema VALUES (4)")
        connection.execute("CREATE TABLE outbox_messages (id TEXT)")
    connection.close()
    capsys.readouterr()
    filled = [
        a.format(
            url=url,
            garbage=f"sqlite:///{garbage}",
            alien=f"sqlite:///{alien}",
            broken="outbox_cli_broken",
            typo="outbox_cli_typo",
            missing=f"sqlite:///{tmp_path / 'typo.db'}",
        )
        for a in argv
    ]
    assert main(filled) == code
    err = capsys.readouterr().err
    assert message in err
    assert "s3cret" not in err
    assert not (tmp_path / "typo.db").exists()
    assert "Traceback" not in err


def test_an_outcome_unknown_retry_needs_force(
    url: str, server: FakeSmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    [id] = enqueue(url, server, 1)
    with Outbox.open(url) as outbox:
        claimed = outbox.store.claim("w", limit=1, lease=30, now=outbox.clock())
        outbox.store.finish(claimed[0].id, "w", State.OUTCOME_UNKNOWN, now=outbox.clock())
    assert main(["outbox", "retry", "--url", url, id]) == 1
    assert "add --force" in capsys.readouterr().err
    assert main(["outbox", "retry", "--url", url, id, "--force"]) == 0
