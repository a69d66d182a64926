"""Discovery with an unreachable resolver: the registry answers at once, time-outs are named."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from mailbridge.cli import main
from mailbridge.providers import DiscoveryProgress, discover
from mailbridge.smtp import probe_smtp
from mailbridge.smtp.connection import Step
from mailbridge.testing import FakeSmtpServer

from .conftest import PASSWORD, USER


@pytest.fixture
def silent_resolver_port() -> Iterator[int]:
    """A UDP port on loopback that receives DNS queries and never answers them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _dns_args(port: int) -> list[str]:
    return ["--nameserver", "127.0.0.1", "--dns-port", str(port), "--dns-timeout", "5"]


def test_a_registry_domain_is_answered_without_waiting_for_dns(
    silent_resolver_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(
        ["discover", "someone@gmail.com", "--timeout", "10", *_dns_args(silent_resolver_port)]
    )
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 1.0, elapsed
    assert "smtp.gmail.com" in capsys.readouterr().out


def test_timed_out_sources_are_named_in_text_and_json(
    silent_resolver_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["discover", "x@unknown.example", "--no-guess", "--timeout", "1.2"]
    args += _dns_args(silent_resolver_port)
    started = time.monotonic()
    assert main([*args, "--progress"]) == 1
    assert time.monotonic() - started < 2.0
    captured = capsys.readouterr()
    assert "no answer in time from: mx, autoconfig, srv" in captured.out
    assert "waiting for mx, autoconfig, srv" in captured.err  # progress while pending
    assert "mx: no answer in time" in captured.err
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["timed_out"] == ["mx", "autoconfig", "srv"]
    assert {s["name"]: s["timed_out"] for s in document["sources"]}["registry"] is False
    assert captured.err == ""  # no progress unless asked for (stderr is no terminal here)


def test_progress_calls_while_sources_are_pending(silent_resolver_port: int) -> None:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = silent_resolver_port
    events: list[DiscoveryProgress] = []
    result = discover(
        "x@unknown.example", resolver=resolver, guess=False, timeout=1.5, progress=events.append
    )
    assert result.timed_out == ("mx", "autoconfig", "srv")
    assert events[0].finished is not None and events[0].finished.name == "registry"
    assert any(e.finished is None and "mx" in e.pending for e in events)  # a reminder came


def test_connection_test_reports_each_step_as_it_ends(
    smtp_server: FakeSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mailbridge import SmtpSettings

    seen: list[tuple[Step, int]] = []
    settings = SmtpSettings(
        smtp_server.host,
        smtp_server.port,
        "starttls",
        username=USER,
        password=PASSWORD,
        ca_file=smtp_server.ca_file,
    )
    report = probe_smtp(
        settings, observer=lambda step: seen.append((step, smtp_server.connections))
    )
    assert report.ok and [step for step, _ in seen] == list(report.steps)
    assert seen[0][0].name == "resolve" and seen[0][1] == 0  # reported before connecting

    monkeypatch.setenv("MAILBRIDGE_PASSWORD", PASSWORD)
    server_args = ["--host", smtp_server.host, "--port", str(smtp_server.port), "--user", USER,
                   "--ca-file", str(smtp_server.ca_file), "--timeout", "2"]  # fmt: skip
    assert main(["test-connection", *server_args]) == 0
    quiet = capsys.readouterr()
    assert main(["test-connection", *server_args, "--progress"]) == 0
    loud = capsys.readouterr()
    assert quiet.err == "" and "ok   connect" in loud.err and "ok   auth" in loud.err
    assert loud.out.count("\n") == quiet.out.count("\n")  # stdout unchanged for scripts
    assert PASSWORD not in loud.out + loud.err
