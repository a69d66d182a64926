"""Messages per second: mailbridge (PIPELINING) vs plain smtplib, over an emulated slow link.

Both clients send the same pre-composed message (a ~30 KB PDF attachment) over
one reused connection to a local FakeSmtpServer, through `DelayProxy`, which
delays every chunk by `--delay-ms` in each direction. Connection setup (and
STARTTLS + AUTH with `--tls`) and one warm-up message are outside the timed
loop. After each run the server must have received every message, unchanged.

    python benchmarks/pipelining.py --quick
    python benchmarks/pipelining.py --tls
    python benchmarks/pipelining.py --delay-ms 10 50 --recipients 1 3 10 --messages 100

Round trips per message, in theory: smtplib waits for every reply (MAIL, one
RCPT per recipient, DATA, end of data: 3 + recipients); mailbridge sends MAIL,
all RCPTs and DATA in one write when the server offers PIPELINING (RFC 2920),
then the message: 2. One round trip costs 2 x delay, so the best possible rate
("limit") is 1 / (round trips x 2 x delay). "RT seen" is what the proxy
observed: server-to-client replies that followed client traffic, per message.
"""

from __future__ import annotations

import argparse
import logging
import random
import smtplib
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from mailbridge import (
    Attachment,
    DeliveryClient,
    DocumentEmail,
    PreparedMessage,
    Security,
    SmtpSettings,
)
from mailbridge.smtp.transport import SmtpTransport
from mailbridge.testing import FakeSmtpServer

# The proxy lives next to this file; a script's directory is on sys.path already, but not
# with `python -m benchmarks.pipelining`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from delayproxy import DelayProxy

SENDER = "billing@acme.example"
USER, PASSWORD = "billing@acme.example", "benchmark-password"
ATTACHMENT_SIZE = 30_000
QUICK_MESSAGES = 30
TIMEOUT = 30.0  # seconds, for every socket operation of both clients
NODELAY = "smtplib+nodelay"

Sender = tuple[Callable[[], None], Callable[[], None]]  # (send one message, close)


@attrs.frozen
class RunResult:
    """One client's timed loop."""

    client: str
    seconds: float
    messages: int
    round_trips: int  # in theory, per message
    turns: int  # round trips the proxy saw during the timed loop
    connections: int  # connections the proxy saw during the timed loop

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@attrs.frozen
class Case:
    delay_ms: float
    recipients: int
    tls: bool

    @property
    def security(self) -> str:
        return "STARTTLS+AUTH" if self.tls else "plain"


@attrs.define
class CaseResult:
    case: Case
    runs: list[RunResult] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)


def pdf_bytes(size: int = ATTACHMENT_SIZE, seed: int = 2920) -> bytes:
    """A deterministic PDF-like document of about `size` bytes (binary stream inside)."""
    head = (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
        b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
        b"3 0 obj\n<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>\nendobj\n"
    )
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    stream_size = max(0, size - len(head) - len(tail) - 40)
    stream = random.Random(seed).randbytes(stream_size)
    return head + b"4 0 obj\n<< /Length %d >>\nstream\n" % stream_size + stream + tail


# -- the two clients ----------------------------------------------------------------


def smtplib_sender(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    message: PreparedMessage,
    nodelay: bool = False,
) -> Sender:
    """Connect (STARTTLS and login when `context` is given); returns (send one, close).

    smtplib leaves Nagle's algorithm on; `nodelay` turns it off, as mailbridge does.
    """
    smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
    try:
        if nodelay and smtp.sock is not None:
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        smtp.ehlo()
        if context is not None:
            smtp.starttls(context=context)
            smtp.ehlo()
            smtp.login(USER, PASSWORD)
    except BaseException:
        smtp.close()
        raise
    recipients = list(message.recipients)

    def send() -> None:
        refused = smtp.sendmail(message.envelope_sender, recipients, message.data)
        if refused:
            raise RuntimeError(f"smtplib: recipients refused: {refused}")

    def close() -> None:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    return send, close


def mailbridge_sender(client: DeliveryClient, message: PreparedMessage) -> Sender:
    """Sending through `client`; its connection opens on the first (warm-up) send."""

    def send() -> None:
        result = client.send(message)
        if not result.ok:
            raise RuntimeError(f"mailbridge: recipients refused: {result.refused}")

    return send, client.close


def timed_run(
    name: str,
    connect: Callable[[], Sender],
    proxy: DelayProxy,
    messages: int,
    round_trips: int,
) -> RunResult:
    """Connect, send one warm-up message, then time `messages` sends on the same connection."""
    send, close = connect()
    try:
        send()  # warm-up: the connection is open, secured and logged in afterwards
        proxy.stats.reset()
        started = time.perf_counter()
        for _ in range(messages):
            send()
        seconds = time.perf_counter() - started
        turns, connections = proxy.stats.turns, proxy.stats.connections
    finally:
        close()
    return RunResult(name, seconds, messages, round_trips, turns, connections)


# -- one case -------------------------------------------------------------------------


def check_received(
    server: FakeSmtpServer, start: int, expected: int, message: PreparedMessage, who: str
) -> list[str]:
    """Problems with the messages `server` received since index `start` (none: [])."""
    received = server.messages[start:]
    problems = []
    if len(received) != expected:
        problems.append(f"{who}: server received {len(received)} messages, expected {expected}")
    want = message.data.replace(b"\r\n", b"\n").rstrip(b"\n")
    bad = sum(
        1
        for got in received
        if got.data.replace(b"\r\n", b"\n").rstrip(b"\n") != want
        or sorted(got.rcpt_tos) != sorted(message.recipients)
        or got.mail_from != message.envelope_sender
    )
    if bad:
        problems.append(f"{who}: {bad} received messages differ from what was sent")
    return problems


def run_case(
    case: Case,
    messages: int,
    attachment: bytes,
    *,
    library_defaults: bool = False,
    nodelay_baseline: bool = False,
) -> CaseResult:
    result = CaseResult(case)
    users = {USER: PASSWORD} if case.tls else None
    server = FakeSmtpServer(tls="starttls" if case.tls else "none", users=users).start()
    try:
        proxy = DelayProxy(server.host, server.port, case.delay_ms / 1000).start()
        try:
            context = server.client_ssl_context() if case.tls else None
            settings = SmtpSettings(
                host=proxy.host,
                port=proxy.port,
                security=Security.STARTTLS if case.tls else Security.NONE,
                ssl_context=context,
                username=USER if case.tls else None,
                password=PASSWORD if case.tls else None,
                connect_timeout=TIMEOUT,
                command_timeout=TIMEOUT,
                data_timeout=TIMEOUT,
            )
            client = DeliveryClient.own_smtp(SENDER, settings)
            if not library_defaults and isinstance(client.transport, SmtpTransport):
                # By default mailbridge opens a fresh connection every 100 messages; keep
                # one connection for the whole run, as smtplib does (setup is not timed).
                client.transport.max_messages_per_connection = messages + 1
            email = DocumentEmail(
                to=[f"customer{i}@example.test" for i in range(case.recipients)],
                subject="Invoice 2024-0042",
                body="Dear customer,\n\nplease find attached your invoice.\n\nACME Billing\n",
                attachments=[Attachment("invoice.pdf", attachment)],
            )
            prepared = client.prepare(email)
            clients: list[tuple[str, Callable[[], Sender], int]] = [
                (
                    "smtplib",
                    lambda: smtplib_sender(proxy.host, proxy.port, context, prepared),
                    3 + case.recipients,
                ),
                (
                    "mailbridge",
                    lambda: mailbridge_sender(client, prepared),
                    2 if server.pipelining else 3 + case.recipients,
                ),
            ]
            if nodelay_baseline:
                clients.insert(
                    1,
                    (
                        NODELAY,
                        lambda: smtplib_sender(proxy.host, proxy.port, context, prepared, True),
                        3 + case.recipients,
                    ),
                )
            for name, connect, round_trips in clients:
                start = len(server.messages)
                try:
                    result.runs.append(timed_run(name, connect, proxy, messages, round_trips))
                except Exception as exc:  # report it with the others, then go on
                    result.problems.append(f"{name}: {type(exc).__name__}: {exc}")
                expected = messages + 1  # with the warm-up message
                result.problems += check_received(server, start, expected, prepared, name)
        finally:
            proxy.stop()
    finally:
        server.stop()
    return result


# -- output ---------------------------------------------------------------------------


def table(results: Sequence[CaseResult]) -> str:
    header = (
        "delay",
        "rcpts",
        "security",
        "client",
        "msg/s",
        "RT/msg",
        "RT seen",
        "limit/s",
        "of limit",
        "reconnects",
        "vs smtplib",
    )
    groups: list[list[tuple[str, ...]]] = []
    for case_result in results:
        case = case_result.case
        baseline = next((r.rate for r in case_result.runs if r.client == "smtplib"), None)
        group: list[tuple[str, ...]] = []
        for run in case_result.runs:
            limit = 1 / (run.round_trips * 2 * case.delay_ms / 1000) if case.delay_ms else 0.0
            ratio = f"{run.rate / baseline:.2f}x" if baseline and run.client != "smtplib" else ""
            group.append(
                (
                    f"{case.delay_ms:g} ms",
                    str(case.recipients),
                    case.security,
                    run.client,
                    f"{run.rate:.1f}",
                    str(run.round_trips),
                    f"{run.turns / run.messages:.2f}",
                    f"{limit:.1f}" if limit else "-",
                    f"{run.rate / limit:.0%}" if limit else "-",
                    str(run.connections),
                    ratio,
                )
            )
        groups.append(group)
    rows = [row for group in groups for row in group]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    left = {2, 3}  # text columns

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), "  ".join("-" * width for width in widths)]
    for number, group in enumerate(groups):
        if number and len(groups[0]) > 1:
            out.append("")
        out.extend(line(row) for row in group)
    return "\n".join(out)


def ratio(case_result: CaseResult, client: str, baseline: str) -> float | None:
    """`client`'s rate divided by `baseline`'s in one case, if both ran."""
    rates = {run.client: run.rate for run in case_result.runs}
    if client in rates and baseline in rates:
        return rates[client] / rates[baseline]
    return None


def summary(results: Sequence[CaseResult]) -> str:
    """One line: the mailbridge/smtplib ratio per case and whether every message arrived."""
    parts = []
    for case_result in results:
        case = case_result.case
        value = ratio(case_result, "mailbridge", "smtplib")
        text = f"{value:.2f}x" if value is not None else "n/a"
        nodelay = ratio(case_result, "mailbridge", NODELAY)
        if nodelay is not None:
            text += f" ({nodelay:.2f}x vs {NODELAY})"
        parts.append(f"{text} at {case.recipients} rcpt/{case.delay_ms:g} ms/{case.security}")
    sent = sum(run.messages + 1 for r in results for run in r.runs)
    problems = sum(len(r.problems) for r in results)
    verdict = "all arrived intact" if not problems else f"{problems} PROBLEM(S), see above"
    return f"Summary: mailbridge/smtplib {', '.join(parts)}; {sent} messages sent, {verdict}."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Messages/s of mailbridge (SMTP PIPELINING) vs smtplib over a delayed link."
    )
    parser.add_argument(
        "--messages", type=int, default=200, help="timed messages per client (default 200)"
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        nargs="+",
        default=[10.0],
        help="one-way delay added by the proxy, in ms; several allowed (default 10)",
    )
    parser.add_argument(
        "--recipients",
        type=int,
        nargs="+",
        default=[1, 3],
        help="recipients per message; several allowed (default 1 3)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="also run with STARTTLS and AUTH (plain always runs)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_MESSAGES} messages per client"
    )
    parser.add_argument(
        "--library-defaults",
        action="store_true",
        help="keep mailbridge's reconnect every 100 messages (then it is partly timed)",
    )
    parser.add_argument(
        "--nodelay-baseline",
        action="store_true",
        help=f"also time {NODELAY}: smtplib with Nagle's algorithm off, as mailbridge has it",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, QUICK_MESSAGES)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if any(not 0 <= delay <= 1000 for delay in args.delay_ms):
        parser.error("--delay-ms must be between 0 and 1000")
    if any(not 1 <= count <= 100 for count in args.recipients):
        parser.error("--recipients must be between 1 and 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # aiosmtpd logs a deprecation warning on every login; it is not ours to fix here.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    attachment = pdf_bytes()
    cases = [
        Case(delay, count, tls)
        for tls in ([False, True] if args.tls else [False])
        for delay in args.delay_ms
        for count in args.recipients
    ]
    reuse = "mailbridge reconnects every 100" if args.library_defaults else "one connection each"
    print(
        f"{args.messages} timed messages per client and case (+1 untimed warm-up), "
        f"{len(attachment)} byte PDF attached, {reuse}; delay is per direction."
    )
    results: list[CaseResult] = []
    for case in cases:
        print(
            f"  running {case.delay_ms:g} ms, {case.recipients} rcpt, {case.security} ...",
            flush=True,
        )
        outcome = run_case(
            case,
            args.messages,
            attachment,
            library_defaults=args.library_defaults,
            nodelay_baseline=args.nodelay_baseline,
        )
        results.append(outcome)
        sys.stdout.flush()
        for problem in outcome.problems:
            print(f"  PROBLEM: {problem}", file=sys.stderr, flush=True)
    print()
    print(table(results))
    print()
    print(summary(results))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
