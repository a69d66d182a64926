"""Bulk sending: mailbridge vs smtplib, Django and aiosmtplib, over an emulated slow link.

Everything runs on 127.0.0.1 in one process tree: the aiosmtpd-based FakeSmtpServer and
the delay proxies (`delayproxy.DelayProxy`) in a child process (so they do not compete with
the measured client for the GIL), the real Postfix (`RealMailServers`, root only) as its own
daemons. Each contender sends the same pre-composed ~30 KB message (mailbridge's
`prepared.data`; Django composes its own EmailMessage of about the same size) the way its
documentation recommends for bulk sending:

* smtplib: one connection, `sendmail` in a loop (`starttls` with a verifying context);
* Django: `EmailBackend.send_messages` on one opened connection, in batches;
* aiosmtplib: `--connections` concurrent connections, each sending its share in turn;
* mailbridge send(): `client.send(prepared)` in a loop, one message at a time (library
  defaults: new connection every 100 messages);
* mailbridge async send(): the same with `await` on `AsyncDeliveryClient`;
* mailbridge xN: `send_many(..., concurrency=3N)`, pool `max_per_server=N`: three
  messages pipelined on each connection (the pool's default `messages_in_flight`);
* ideal BDAT x1 (CHUNKING servers, plain): not a library but the ceiling of this
  server and proxy: pre-built RSET/MAIL/RCPT/BDAT bytes, three in flight on one
  connection, the replies only counted.

Connecting (and STARTTLS + AUTH) and one warm-up message per connection are not timed.
Every contender stops at `--messages` or at `--time-limit` seconds, whichever comes
first. Afterwards the number of messages the server accepted is checked (aiosmtpd: its
message list, bytes compared; Postfix: its log, one `cleanup ... message-id=` line per
accepted message).

    python benchmarks/bulk.py --quick
    python benchmarks/bulk.py --tls
    python benchmarks/bulk.py --delay-ms 10 --servers aiosmtpd postfix --recipients 1

"limit" = connections / (round trips x 2 x delay): 3 + recipients round trips for
lock-step clients, 2 with PIPELINING, 1 with PIPELINING + CHUNKING (BDAT); pipelined
across messages (mailbridge xN), 1 with DATA and 1/3 with BDAT (three messages per
round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import multiprocessing
import os
import random
import re
import resource
import smtplib
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import attrs

from mailbridge import (
    AsyncConnectionPool,
    AsyncDeliveryClient,
    Attachment,
    DeliveryClient,
    DocumentEmail,
    PreparedMessage,
    Security,
    SmtpSettings,
)
from mailbridge.smtp import ConnectionPool
from mailbridge.smtp.wire import normalize_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bulk_server import ServerProcess

ATTACHMENT_SIZE = 30_000
TIMEOUT = 30.0
FAKE_USER, FAKE_PASSWORD = "billing@acme.example", "benchmark-password"
POSTFIX_USER, POSTFIX_PASSWORD = "billing@example.test", "benchmark-password"
BODY = "Dear customer,\n\nplease find attached your invoice.\n\nACME Billing\n"
SMTPLIB, DJANGO, AIOSMTPLIB = "smtplib", "Django", "aiosmtplib"
MB1 = "mailbridge"
IDEAL = "ideal BDAT x1"
IN_FLIGHT = 3  # messages one mailbridge connection carries at once (the pool default)


# Extra ConnectionPool options for every mailbridge contender (--per-connection); empty:
# the library's defaults (a fresh connection every 100 messages).
class PoolOptions(TypedDict, total=False):
    max_messages_per_connection: int


POOL_OPTIONS: PoolOptions = {}
MISSING = "Django and aiosmtplib are needed: pip install django aiosmtplib"
# --contenders names -> the runners' keys, in the order they run
CONTENDERS = {
    "smtplib": SMTPLIB,
    "django": DJANGO,
    "aiosmtplib": AIOSMTPLIB,
    "send": "mailbridge-loop",
    "async-send": "mailbridge-async-loop",
    "x1": "mailbridge1",
    "xN": "mailbridgeN",
    "ideal": IDEAL,
}


# -- workload ---------------------------------------------------------------------------


def pdf_bytes(size: int = ATTACHMENT_SIZE, seed: int = 2920) -> bytes:
    """A deterministic PDF-like document of about `size` bytes (binary stream inside)."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    stream_size = max(0, size - len(head) - len(tail) - 40)
    stream = random.Random(seed).randbytes(stream_size)
    return head + b"4 0 obj\n<< /Length %d >>\nstream\n" % stream_size + stream + tail


@attrs.frozen
class Target:
    """Where and how to connect, and what to send."""

    server: str  # "aiosmtpd", "aiosmtpd+chunking", "postfix"
    host: str
    port: int
    tls: bool
    ca_file: str | None
    username: str | None
    password: str | None
    sender: str
    recipients: tuple[str, ...]
    delay: float  # one way, seconds
    chunking: bool

    @property
    def security(self) -> str:
        return "STARTTLS+AUTH" if self.tls else "plain"

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.tls else None

    def settings(self) -> SmtpSettings:
        return SmtpSettings(
            host=self.host,
            port=self.port,
            security=Security.STARTTLS if self.tls else Security.NONE,
            ssl_context=self.context(),
            username=self.username,
            password=self.password,
            connect_timeout=TIMEOUT,
            command_timeout=TIMEOUT,
            data_timeout=TIMEOUT,
        )

    def prepare(self, attachment: bytes) -> PreparedMessage:
        client = DeliveryClient.own_smtp(self.sender, self.settings())
        email = DocumentEmail(
            to=list(self.recipients),
            subject="Invoice 2024-0042",
            body=BODY,
            attachments=[Attachment("invoice.pdf", attachment)],
        )
        prepared = client.prepare(email)
        client.close()
        return prepared


@attrs.define
class Run:
    contender: str
    connections: int
    round_trips: float  # per message, in theory
    sent: int = 0  # timed messages accepted
    warmup: int = 0  # untimed messages accepted
    seconds: float = 0.0
    turns: int | None = None  # round trips the proxy saw (1-connection contenders)
    error: str = ""
    note: str = ""

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Deadline:
    """Stops a timed loop at `messages` or after `seconds`."""

    def __init__(self, messages: int, seconds: float) -> None:
        self.messages, self.seconds = messages, seconds
        self.started = self.ends = 0.0
        self.taken = 0

    def start(self) -> None:
        self.started = time.perf_counter()
        self.ends = self.started + self.seconds

    def take(self) -> bool:
        """Whether one more message may be started (counts it)."""
        if self.taken >= self.messages or time.perf_counter() >= self.ends:
            return False
        self.taken += 1
        return True

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# -- contenders -------------------------------------------------------------------------

Reset = Callable[[], None]


def run_smtplib(target: Target, data: PreparedMessage, limit: Deadline, reset: Reset) -> Run:
    run = Run(SMTPLIB, 1, 3 + len(target.recipients))
    smtp = smtplib.SMTP(target.host, target.port, timeout=TIMEOUT)
    try:
        smtp.ehlo()
        if target.tls:
            smtp.starttls(context=target.context())
            smtp.ehlo()
            smtp.login(target.username or "", target.password or "")
        rcpts = list(target.recipients)
        smtp.sendmail(data.envelope_sender, rcpts, data.data)
        run.warmup = 1
        reset()
        limit.start()
        while limit.take():
            if smtp.sendmail(data.envelope_sender, rcpts, data.data):
                raise RuntimeError("recipients refused")
            run.sent += 1
        run.seconds = limit.elapsed()
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
    return run


# "cert_note" is set once Django's default context proved unable to verify the test CA.
_DJANGO_STATE: dict[str, Any] = {"configured": False, "cert_note": ""}


def run_django(target: Target, attachment: bytes, limit: Deadline, reset: Reset) -> Run:
    from django.conf import settings
    from django.core.mail import EmailMessage, get_connection
    from django.core.mail.utils import DNS_NAME

    run = Run(DJANGO, 1, 3 + len(target.recipients))
    values = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": target.host,
        "EMAIL_PORT": target.port,
        "EMAIL_USE_TLS": target.tls,
        "EMAIL_HOST_USER": target.username or "",
        "EMAIL_HOST_PASSWORD": target.password or "",
        "EMAIL_TIMEOUT": TIMEOUT,
    }
    if not _DJANGO_STATE["configured"]:
        settings.configure(**values)
        _DJANGO_STATE["configured"] = True
    else:
        for name, value in values.items():
            setattr(settings, name, value)
    DNS_NAME.get_fqdn()  # resolved once per process; not part of the timing

    def message() -> Any:
        return EmailMessage(
            "Invoice 2024-0042",
            BODY,
            target.sender,
            list(target.recipients),
            attachments=[("invoice.pdf", attachment, "application/pdf")],
        )

    old_cert_file = os.environ.get("SSL_CERT_FILE")
    if target.tls and _DJANGO_STATE["cert_note"]:
        os.environ["SSL_CERT_FILE"] = str(target.ca_file)
        run.note = _DJANGO_STATE["cert_note"]
    connection = get_connection()
    try:
        try:
            connection.open()
        except ssl.SSLCertVerificationError:
            # Django's TLS uses ssl.create_default_context(): only the system's CAs.
            os.environ["SSL_CERT_FILE"] = str(target.ca_file)
            run.note = _DJANGO_STATE["cert_note"] = (
                "Django TLS runs set SSL_CERT_FILE to the test CA: its default "
                "context trusts only the system CAs"
            )
            connection = get_connection()
            connection.open()
        if connection.send_messages([message()]) != 1:
            raise RuntimeError("warm-up message not sent")
        run.warmup = 1
        reset()
        limit.start()
        batch_size = 10  # a batch per send_messages call; the deadline is checked between
        while True:
            batch = []
            while len(batch) < batch_size and limit.take():
                batch.append(message())
            if not batch:
                break
            run.sent += connection.send_messages(batch)
        run.seconds = limit.elapsed()
    finally:
        connection.close()
        if old_cert_file is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = old_cert_file
    return run


def run_aiosmtplib(
    target: Target, data: PreparedMessage, limit: Deadline, reset: Reset, connections: int
) -> Run:
    import aiosmtplib

    run = Run(f"{AIOSMTPLIB} x{connections}", connections, 3 + len(target.recipients))
    rcpts = list(target.recipients)

    async def main() -> None:
        clients = []
        try:
            for _ in range(connections):
                client = aiosmtplib.SMTP(
                    hostname=target.host,
                    port=target.port,
                    start_tls=target.tls,
                    tls_context=target.context(),
                    timeout=TIMEOUT,
                )
                clients.append(client)
                await client.connect()
                if target.tls:
                    await client.login(target.username or "", target.password or "")
                await client.sendmail(data.envelope_sender, rcpts, data.data)
                run.warmup += 1
            reset()
            limit.start()

            async def worker(client: Any) -> None:
                while limit.take():
                    refused, _ = await client.sendmail(data.envelope_sender, rcpts, data.data)
                    if refused:
                        raise RuntimeError("recipients refused")
                    run.sent += 1

            await asyncio.gather(*(worker(client) for client in clients))
            run.seconds = limit.elapsed()
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.quit(), 5)
                client.close()

    asyncio.run(asyncio.wait_for(main(), limit.seconds + 120))
    return run


def run_ideal(target: Target, data: PreparedMessage, limit: Deadline, reset: Reset) -> Run:
    """The ceiling for this server and proxy: pre-built BDAT transactions, IN_FLIGHT at
    a time on one connection, replies only counted (no parsing, no bookkeeping)."""
    run = Run(IDEAL, 1, 1 / IN_FLIGHT)
    run.note = (
        f"{IDEAL}: pre-built RSET/MAIL/RCPT/BDAT bytes, {IN_FLIGHT} in flight, replies only "
        "counted: what this server and proxy allow a client at best."
    )
    payload = normalize_data(data.data)
    head = [f"MAIL FROM:<{data.envelope_sender}>"]
    head += [f"RCPT TO:<{r}>" for r in target.recipients]
    head.append(f"BDAT {len(payload)} LAST")
    wire = ("RSET\r\n" + "".join(line + "\r\n" for line in head)).encode() + payload
    per_message = 3 + len(target.recipients)  # RSET, MAIL, each RCPT, BDAT
    with socket.create_connection((target.host, target.port), TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(TIMEOUT)
        buffer = b""

        def replies(wanted: int) -> Iterator[None]:
            """Yield once per final reply line, `wanted` of them; a refusal raises."""
            nonlocal buffer
            while wanted:
                while b"\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise RuntimeError("the server closed the connection")
                    buffer += chunk
                line, buffer = buffer.split(b"\r\n", 1)
                if line[3:4] == b"-":
                    continue  # a multi-line reply goes on
                if line[:1] != b"2":
                    raise RuntimeError(f"refused: {line!r}")
                wanted -= 1
                yield

        for _ in replies(1):  # greeting
            pass
        sock.sendall(b"EHLO bench.example\r\n")
        for _ in replies(1):
            pass
        sock.sendall(wire)  # warm-up
        for _ in replies(per_message):
            pass
        run.warmup = 1
        reset()
        limit.start()
        written = 0
        while written < IN_FLIGHT and limit.take():
            written += 1
        sock.sendall(wire * written)
        counted = 0
        for _ in replies(10**9):
            counted += 1
            if counted % per_message:
                continue
            run.sent += 1
            if limit.take():
                written += 1
                sock.sendall(wire)
            if run.sent == written:
                break
        run.seconds = limit.elapsed()
        sock.sendall(b"QUIT\r\n")
    return run


def _client(target: Target, connections: int) -> tuple[DeliveryClient, ConnectionPool]:
    pool = ConnectionPool(max_per_server=connections, messages_in_flight=IN_FLIGHT, **POOL_OPTIONS)
    client = DeliveryClient.own_smtp(target.sender, target.settings(), pool=pool)
    return client, pool


def run_mailbridge_loop(
    target: Target, data: PreparedMessage, limit: Deadline, reset: Reset
) -> Run:
    run = Run(f"{MB1} send()", 1, 1 if target.chunking else 2)
    client, pool = _client(target, 1)
    try:
        if not client.send(data).ok:
            raise RuntimeError("warm-up refused")
        run.warmup = 1
        reset()
        limit.start()
        while limit.take():
            if not client.send(data).ok:
                raise RuntimeError("recipients refused")
            run.sent += 1
        run.seconds = limit.elapsed()
    finally:
        client.close()
        pool.close()
    return run


def run_mailbridge_async_loop(
    target: Target, data: PreparedMessage, limit: Deadline, reset: Reset
) -> Run:
    """`await client.send(prepared)` in a loop on AsyncDeliveryClient (one connection)."""
    run = Run(f"{MB1} async send()", 1, 1 if target.chunking else 2)

    async def main() -> None:
        pool = AsyncConnectionPool(max_per_server=1, messages_in_flight=IN_FLIGHT, **POOL_OPTIONS)
        async with AsyncDeliveryClient.own_smtp(
            target.sender, target.settings(), pool=pool
        ) as client:
            if not (await client.send(data)).ok:
                raise RuntimeError("warm-up refused")
            run.warmup = 1
            reset()
            limit.start()
            while limit.take():
                if not (await client.send(data)).ok:
                    raise RuntimeError("recipients refused")
                run.sent += 1
            run.seconds = limit.elapsed()

    asyncio.run(asyncio.wait_for(main(), limit.seconds + 120))
    return run


def run_mailbridge_many(
    target: Target, data: PreparedMessage, limit: Deadline, reset: Reset, connections: int
) -> Run:
    # Messages pipelined across transactions: DATA costs one round trip per message,
    # BDAT 1 / IN_FLIGHT (that many messages travel together).
    run = Run(f"{MB1} x{connections}", connections, 1 / IN_FLIGHT if target.chunking else 1)
    client, pool = _client(target, connections)
    threads = connections * IN_FLIGHT
    errors: list[str] = []

    def count(outcomes: Iterator[Any]) -> int:
        ok = 0
        for outcome in outcomes:
            if outcome.ok:
                ok += 1
            elif len(errors) < 3:
                errors.append(f"{type(outcome.error).__name__}: {outcome.error}")
        return ok

    def feed() -> Iterator[PreparedMessage]:
        while limit.take():
            yield data

    try:
        # warm-up: opens the connections
        run.warmup = count(client.send_many([data] * connections, concurrency=connections))
        reset()
        limit.start()
        run.sent = count(client.send_many(feed(), concurrency=threads))
        run.seconds = limit.elapsed()
    finally:
        client.close()
        pool.close()
    if errors:
        run.error = "; ".join(errors)
    return run


# -- servers and verification -------------------------------------------------------------

_MESSAGE_ID_LINE = re.compile(rb"postfix/cleanup\[\d+\]: \w+: message-id=")


def postfix_accepted(log: Path) -> int:
    try:
        return len(_MESSAGE_ID_LINE.findall(log.read_bytes()))
    except OSError:
        return 0


def postfix_logged(log: Path, before: int, expected: int) -> int:
    """Messages Postfix logged since `before`, waiting up to 30 s for `expected`."""
    deadline = time.monotonic() + 30
    got = postfix_accepted(log) - before
    while got < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        got = postfix_accepted(log) - before
    return got


@attrs.define
class Case:
    target: Target
    runs: list[Run] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)


def run_case(
    target: Target,
    attachment: bytes,
    args: argparse.Namespace,
    helper: ServerProcess,
    postfix_log: Path | None,
    contenders: Sequence[str],
) -> Case:
    case = Case(target)
    prepared = target.prepare(attachment)
    n = args.connections

    def reset() -> None:
        helper.call("reset")

    runners: dict[str, Callable[[Deadline], Run]] = {
        SMTPLIB: lambda lim: run_smtplib(target, prepared, lim, reset),
        DJANGO: lambda lim: run_django(target, attachment, lim, reset),
        AIOSMTPLIB: lambda lim: run_aiosmtplib(target, prepared, lim, reset, n),
        "mailbridge-loop": lambda lim: run_mailbridge_loop(target, prepared, lim, reset),
        "mailbridge-async-loop": lambda lim: run_mailbridge_async_loop(
            target, prepared, lim, reset
        ),
        "mailbridge1": lambda lim: run_mailbridge_many(target, prepared, lim, reset, 1),
        "mailbridgeN": lambda lim: run_mailbridge_many(target, prepared, lim, reset, n),
        IDEAL: lambda lim: run_ideal(target, prepared, lim, reset),
    }
    for name in contenders:
        if name == IDEAL and (not target.chunking or target.tls or target.server == "postfix"):
            continue  # the ceiling is measured where it is simple: plain BDAT to aiosmtpd
        before = (
            postfix_accepted(postfix_log) if postfix_log is not None else int(helper.call("count"))
        )
        limit = Deadline(args.messages, args.time_limit)
        try:
            run = runners[name](limit)
        except Exception as exc:  # report it with the others, then go on
            case.problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if run.connections == 1:
            run.turns = int(helper.call("turns"))
        case.runs.append(run)
        if run.error:
            case.problems.append(f"{run.contender}: {run.error}")
        expected = run.sent + run.warmup
        if postfix_log is not None:
            got = postfix_logged(postfix_log, before, expected)
            if got != expected:
                case.problems.append(f"{run.contender}: Postfix logged {got}, expected {expected}")
        else:
            data = prepared.data if name != DJANGO else b""  # Django composes its own
            received, intact = helper.call("check", before, data, list(target.recipients))
            if received != expected or intact != expected:
                case.problems.append(
                    f"{run.contender}: server received {received} ({intact} intact), "
                    f"expected {expected}"
                )
    return case


# -- loopback CPU cost and memory ----------------------------------------------------------


def _rss_child(host: str, port: int, messages: int, connections: int, conn: Any) -> None:
    """In a fresh process: peak RSS before and after sending `messages` with send_many."""
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    target = Target(
        "aiosmtpd", host, port, False, None, None, None, FAKE_USER,
        ("customer0@example.test",), 0.0, False,
    )  # fmt: skip
    prepared = target.prepare(pdf_bytes())
    client, pool = _client(target, connections)
    try:
        list(client.send_many([prepared] * connections, concurrency=connections))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        ok = sum(
            1
            for outcome in client.send_many(
                (prepared for _ in range(messages)), concurrency=connections
            )
            if outcome.ok
        )
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        client.close()
        pool.close()
    conn.send((before, after, ok, seconds))


def measure_rss(host: str, port: int, messages: int, connections: int) -> tuple[int, ...]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_rss_child, args=(host, port, messages, connections, child), daemon=True
    )
    process.start()
    try:
        if not parent.poll(300):
            raise RuntimeError("the RSS measurement did not finish within 300 s")
        return tuple(parent.recv())
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def loopback(args: argparse.Namespace, attachment: bytes) -> list[str]:
    """Messages/s and client CPU per message on plain loopback; peak RSS for N and 2N."""
    lines = []
    with ServerProcess(fake=True, tls="none", users=None, chunking=False) as helper:
        info = helper.info
        target = Target(
            "aiosmtpd", info["host"], info["port"], False, None, None, None, FAKE_USER,
            ("customer0@example.test",), 0.0, False,
        )  # fmt: skip
        prepared = target.prepare(attachment)
        lines.append(
            f"Plain loopback, no proxy, aiosmtpd (server in another process), 1 rcpt, "
            f"1 connection, {args.messages} messages:"
        )
        results = {}
        runners = ((SMTPLIB, run_smtplib), (f"{MB1} send()", run_mailbridge_loop))
        for name, runner in runners * args.cpu_rounds:  # alternating, best of the rounds
            limit = Deadline(args.messages, args.time_limit)
            cpu = time.process_time()
            run = runner(target, prepared, limit, lambda: None)
            cpu = time.process_time() - cpu
            results.setdefault(name, []).append((run.rate, cpu / max(run.sent, 1) * 1e3))
        for name, values in results.items():
            rate = max(values)[0]
            cpu_ms = min(cpu for _, cpu in values)
            lines.append(
                f"  {name:18} {rate:8.1f} msg/s   client CPU {cpu_ms:.2f} ms/msg "
                f"(best of {args.cpu_rounds})"
            )
        ratio = max(results[f"{MB1} send()"])[0] / max(results[SMTPLIB])[0]
        lines.append(f"  mailbridge/smtplib: {ratio:.2f}x")
        lines.append(f"Peak RSS of a fresh process sending with send_many (x{args.connections}):")
        for messages in (args.messages, 2 * args.messages):
            before, after, ok, seconds = measure_rss(
                info["host"], info["port"], messages, args.connections
            )
            lines.append(
                f"  {messages:5} messages: ru_maxrss {before / 1024:.1f} MiB before, "
                f"{after / 1024:.1f} MiB after (+{(after - before) / 1024:.1f} MiB), "
                f"{ok} sent, {ok / seconds:.0f} msg/s"
            )
    return lines


def loopback_postfix(args: argparse.Namespace, attachment: bytes) -> list[str]:
    """One message at a time to a real Postfix on plain loopback, sync and async.

    No proxy: nothing ACKs for the client, so a client that leaves Linux's delayed
    ACK on makes Postfix's second small reply wait up to 40 ms (Nagle)."""
    from mailbridge.testing.realservers import RealMailServers, availability

    ok, reason = availability()
    if not ok:
        return [f"Plain loopback to Postfix skipped: {reason}"]
    lines = [f"Plain loopback, no proxy, Postfix, 1 rcpt, 1 connection, {args.messages} messages:"]
    with tempfile.TemporaryDirectory(prefix="bulk-") as name:
        directory = Path(name)
        real = RealMailServers(directory, users={POSTFIX_USER: POSTFIX_PASSWORD})
        real.start()
        try:
            target = Target(
                "postfix", real.host, real.smtp_port, False, str(real.ca_file), None, None,
                POSTFIX_USER, (f"customer0@{real.discard_domain}",), 0.0, True,
            )  # fmt: skip
            prepared = target.prepare(attachment)
            log = directory / "log" / "postfix.log"
            runners = (
                (SMTPLIB, run_smtplib),
                (f"{MB1} send()", run_mailbridge_loop),
                (f"{MB1} async send()", run_mailbridge_async_loop),
            )
            for contender, runner in runners:
                before = postfix_accepted(log)
                run = runner(target, prepared, Deadline(args.messages, args.time_limit), _no_reset)
                expected = run.sent + run.warmup
                got = postfix_logged(log, before, expected)
                check = "" if got == expected else f"  PROBLEM: Postfix logged {got} of {expected}"
                lines.append(
                    f"  {contender:24} {run.rate:8.1f} msg/s  {1000 / max(run.rate, 1e-9):6.2f} "
                    f"ms/msg{check}"
                )
        finally:
            real.stop()
    return lines


def _no_reset() -> None:
    pass


# -- output -----------------------------------------------------------------------------


def table(cases: Sequence[Case]) -> str:
    header = (
        "server", "delay", "rcpt", "security", "contender", "conns", "sent", "msg/s",
        "RT/msg", "RT seen", "limit/s", "of limit", "vs smtplib", "vs Django",
    )  # fmt: skip
    groups = []
    for case in cases:
        target = case.target
        rates = {run.contender: run.rate for run in case.runs}
        base, django = rates.get(SMTPLIB), rates.get(DJANGO)
        group = []
        for run in case.runs:
            limit = run.connections / (run.round_trips * 2 * target.delay) if target.delay else 0
            seen = f"{run.turns / run.sent:.2f}" if run.turns is not None and run.sent else "-"
            group.append(
                (
                    target.server,
                    f"{target.delay * 1000:g} ms",
                    str(len(target.recipients)),
                    target.security,
                    run.contender,
                    str(run.connections),
                    str(run.sent),
                    f"{run.rate:.1f}",
                    f"{run.round_trips:.2g}",
                    seen,
                    f"{limit:.1f}" if limit else "-",
                    f"{run.rate / limit:.0%}" if limit else "-",
                    f"{run.rate / base:.2f}x" if base else "-",
                    f"{run.rate / django:.2f}x" if django else "-",
                )
            )
        groups.append(group)
    rows = [row for group in groups for row in group]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    left = {0, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), "  ".join("-" * width for width in widths)]
    for number, group in enumerate(groups):
        if number:
            out.append("")
        out.extend(line(row) for row in group)
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=500, help="per contender (default 500)")
    parser.add_argument(
        "--time-limit", type=float, default=20.0, help="seconds per contender (default 20)"
    )
    parser.add_argument("--quick", action="store_true", help="60 messages, 8 s per contender")
    parser.add_argument("--tls", action="store_true", help="also run with STARTTLS + AUTH")
    parser.add_argument("--delay-ms", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--recipients", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--connections", type=int, default=4, help="for the xN contenders")
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["aiosmtpd", "aiosmtpd+chunking", "postfix"],
        choices=["aiosmtpd", "aiosmtpd+chunking", "postfix"],
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=list(CONTENDERS),
        choices=list(CONTENDERS),
        help="which to run (default: all; ideal only runs against aiosmtpd+chunking, plain)",
    )
    parser.add_argument("--no-loopback", action="store_true", help="skip the CPU/RSS part")
    parser.add_argument(
        "--per-connection",
        type=int,
        help="mailbridge's max_messages_per_connection (default: the library's, 100)",
    )
    parser.add_argument(
        "--cpu-rounds", type=int, default=2, help="alternating loopback rounds (default 2)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.time_limit = min(args.messages, 60), min(args.time_limit, 8.0)
    if args.messages < 1 or not 0 < args.time_limit <= 600:
        parser.error("--messages must be >= 1 and --time-limit in (0, 600]")
    if any(not 1 <= d <= 1000 for d in args.delay_ms):
        parser.error("--delay-ms must be between 1 and 1000")
    if not 1 <= args.cpu_rounds <= 20:
        parser.error("--cpu-rounds must be between 1 and 20")
    if args.per_connection is not None:
        if args.per_connection < 1:
            parser.error("--per-connection must be at least 1")
        POOL_OPTIONS["max_messages_per_connection"] = args.per_connection
    if not 1 <= args.connections <= 50:
        parser.error("--connections must be between 1 and 50")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    contenders = [CONTENDERS[name] for name in args.contenders]
    if importlib.util.find_spec("django") is None or importlib.util.find_spec("aiosmtplib") is None:
        print(f"{MISSING}; running without them.", file=sys.stderr)
        contenders = [c for c in contenders if c not in (DJANGO, AIOSMTPLIB)]
    attachment = pdf_bytes()
    print(
        f"{args.messages} messages or {args.time_limit:g} s per contender (whichever first), "
        f"{len(attachment)} byte PDF attached; delay per direction; connection setup and "
        f"warm-up untimed. Django composes its own EmailMessage (same subject, body and "
        f"attachment); all others send mailbridge's prepared bytes.",
        flush=True,
    )
    cases: list[Case] = []
    skipped: list[str] = []
    for server in args.servers:
        for tls in [False, True] if args.tls else [False]:
            cases += run_server(server, tls, args, attachment, contenders, skipped)
    print()
    print(table(cases))
    for reason in skipped:
        print(f"Skipped: {reason}")
    if any(c.target.server == "postfix" for c in cases):
        print(
            "Postfix: accepted messages counted via its log (cleanup message-id lines); "
            "mail to discard.test is discarded."
        )
    notes = {run.note for case in cases for run in case.runs if run.note}
    for note in sorted(notes):
        print(f"Note: {note}")
    problems = [p for case in cases for p in case.problems]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if not args.no_loopback:
        print()
        for line in loopback(args, attachment):
            print(line, flush=True)
        if "postfix" in args.servers:
            for line in loopback_postfix(args, attachment):
                print(line, flush=True)
    total = sum(run.sent + run.warmup for case in cases for run in case.runs)
    verdict = "all accepted and verified" if not problems else f"{len(problems)} PROBLEM(S)"
    print(f"\n{total} messages sent through the proxies; {verdict}.")
    return 1 if problems else 0


def run_server(
    server: str,
    tls: bool,
    args: argparse.Namespace,
    attachment: bytes,
    contenders: Sequence[str],
    skipped: list[str],
) -> list[Case]:
    cases: list[Case] = []
    with contextlib.ExitStack() as stack:
        if server == "postfix":
            from mailbridge.testing.realservers import RealMailServers, availability

            ok, reason = availability()
            if not ok:
                if reason not in skipped:
                    skipped.append(f"Postfix: {reason}")
                return cases
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bulk-")))
            real = RealMailServers(directory, users={POSTFIX_USER: POSTFIX_PASSWORD})
            real.start()
            stack.callback(real.stop)
            helper = stack.enter_context(ServerProcess(fake=False))
            host, port = real.host, real.submission_port if tls else real.smtp_port
            ca_file, chunking, sender = str(real.ca_file), True, POSTFIX_USER
            domain, log = real.discard_domain, directory / "log" / "postfix.log"
            user = (POSTFIX_USER, POSTFIX_PASSWORD) if tls else (None, None)
        else:
            users = {FAKE_USER: FAKE_PASSWORD} if tls else None
            chunking = server == "aiosmtpd+chunking"
            helper = stack.enter_context(
                ServerProcess(
                    fake=True,
                    tls="starttls" if tls else "none",
                    users=users,
                    chunking=chunking,
                    separate_proxies=True,
                )
            )
            host, port, ca_file = helper.info["host"], helper.info["port"], helper.info["ca_file"]
            sender, domain, log = FAKE_USER, "example.test", None
            user = (FAKE_USER, FAKE_PASSWORD) if tls else (None, None)
        for delay_ms in args.delay_ms:
            proxy_port = helper.proxy(host, port, delay_ms / 1000)
            for count in args.recipients:
                target = Target(
                    server, "127.0.0.1", proxy_port, tls, ca_file, user[0], user[1], sender,
                    tuple(f"customer{i}@{domain}" for i in range(count)),
                    delay_ms / 1000, chunking,
                )  # fmt: skip
                print(
                    f"  {server}, {delay_ms:g} ms, {count} rcpt, {target.security} ...",
                    flush=True,
                )
                case = run_case(target, attachment, args, helper, log, contenders)
                for problem in case.problems:
                    print(f"  PROBLEM: {problem}", flush=True)
                cases.append(case)
    return cases


if __name__ == "__main__":
    sys.exit(main())
