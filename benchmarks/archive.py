"""Archiving sent mail over IMAP: mailbridge vs imaplib and imapclient, over a slow link.

Dovecot (started by `RealMailServers`; root with dovecot installed) behind the delay
proxy of `delayproxy.py`, in a child process. Every contender stores the same ~30 KB
messages, each with its own Message-ID, with \\Seen into its own folder over implicit
TLS, the way its documentation shows:

* imaplib: `IMAP4_SSL(...).append()` in a loop on one connection (it waits for the
  server's "+" before each message: two round trips per message);
* imapclient: `IMAPClient.append()` in a loop (it, too, waits for the "+": two round
  trips, although Dovecot offers LITERAL+);
* mailbridge, 1 thread: `SentArchiver.archive()` in a loop; each message is first looked
  up by Message-ID so that a retry never stores it twice, then appended with LITERAL+
  (two round trips);
* mailbridge, N threads: `SentArchiver.archive()` from N threads (as `send_many` calls
  it): requests that arrive together share one SEARCH and one MULTIAPPEND.

Logging in is not timed. Afterwards each folder is checked to hold exactly the
messages sent.

    python benchmarks/archive.py                 # 200 messages, 10 and 50 ms
    python benchmarks/archive.py --quick         # 60 messages, 10 ms
"""

from __future__ import annotations

import argparse
import concurrent.futures
import imaplib
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import imapclient

from mailbridge import ImapSettings
from mailbridge.imap import SentArchiver

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bulk_server import ServerProcess

USER, PASSWORD = "billing@example.test", "benchmark-password"
SIZE = 30_000
THREADS = 8


def messages(count: int, run: str) -> list[tuple[bytes, str]]:
    body = ("x" * 75 + "\r\n") * (SIZE // 77)
    out = []
    for n in range(count):
        message_id = f"<{run}.{n}@acme.example>"
        data = (
            f"From: billing@example.test\r\nTo: customer{n}@example.test\r\n"
            f"Subject: Invoice {n}\r\nDate: Fri, 20 Nov 2026 16:30:00 +0000\r\n"
            f"Message-ID: {message_id}\r\n\r\n{body}"
        ).encode()
        out.append((data, message_id))
    return out


Runner = Callable[[str, int, ssl.SSLContext, str, list[tuple[bytes, str]]], float]


def run_imaplib(host: str, port: int, context: ssl.SSLContext, folder: str, batch: list) -> float:  # type: ignore[type-arg]
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=30)
    try:
        imap.login(USER, PASSWORD)
        started = time.perf_counter()
        for data, _ in batch:
            status, _ = imap.append(folder, "(\\Seen)", None, data)
            if status != "OK":
                raise RuntimeError(f"imaplib append: {status}")
        return time.perf_counter() - started
    finally:
        imap.logout()


def run_imapclient(
    host: str,
    port: int,
    context: ssl.SSLContext,
    folder: str,
    batch: list,  # type: ignore[type-arg]
) -> float:
    with imapclient.IMAPClient(host, port, ssl=True, ssl_context=context, timeout=30) as client:
        client.login(USER, PASSWORD)
        started = time.perf_counter()
        for data, _ in batch:
            client.append(folder, data, flags=(imapclient.SEEN,))
        elapsed = time.perf_counter() - started
        client.logout()
    return elapsed


def _archiver(host: str, port: int, ca_file: str, folder: str) -> SentArchiver:
    settings = ImapSettings(
        host, port, "implicit_tls", username=USER, password=PASSWORD, ca_file=ca_file,
        folder=folder, command_timeout=30,
    )  # fmt: skip
    archiver = SentArchiver(settings)
    warm = archiver.archive(*messages(1, "warm-" + folder)[0][:1], message_id=f"<w.{folder}@x>")
    if not warm.archived:
        raise RuntimeError(f"mailbridge warm-up: {warm.reason}")
    return archiver


def run_mailbridge(archiver: SentArchiver, batch: list, threads: int) -> float:  # type: ignore[type-arg]
    started = time.perf_counter()
    if threads == 1:
        outcomes = [archiver.archive(data, message_id=mid) for data, mid in batch]
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(lambda m: archiver.archive(m[0], message_id=m[1]), batch))
    elapsed = time.perf_counter() - started
    failed = [o.reason for o in outcomes if not o.archived]
    if failed:
        raise RuntimeError(f"mailbridge: {len(failed)} not archived: {failed[0]}")
    return elapsed


def count_in(host: str, port: int, context: ssl.SSLContext, folder: str) -> int:
    with imapclient.IMAPClient(host, port, ssl=True, ssl_context=context) as client:
        client.login(USER, PASSWORD)
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--quick", action="store_true", help="60 messages, 10 ms")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.delay_ms = min(args.messages, 60), [10.0]
    if not 1 <= args.messages <= 5000 or any(not 1 <= d <= 1000 for d in args.delay_ms):
        parser.error("--messages must be in [1, 5000] and --delay-ms in [1, 1000]")

    from mailbridge.testing.realservers import RealMailServers, availability

    ok, reason = availability()
    if not ok:
        print(f"Skipped: Dovecot is needed ({reason})")
        return 0
    problems: list[str] = []
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as directory:
        real = RealMailServers(Path(directory), users={USER: PASSWORD})
        real.start()
        try:
            context = real.client_ssl_context()
            with ServerProcess(fake=False) as helper:
                for delay in args.delay_ms:
                    port = helper.proxy(real.host, real.imaps_port, delay / 1000)
                    rows += run_delay(real.host, port, context, str(real.ca_file), delay, args)
                    for _, name, _, _ in rows[-4:]:
                        folder = folder_name(name, delay)
                        stored = count_in(real.host, real.imaps_port, context, folder)
                        want = args.messages + (1 if name.startswith("mailbridge") else 0)
                        if stored != want:
                            problems.append(f"{name} @ {delay:g} ms: {stored} stored, want {want}")
        finally:
            real.stop()
    print()
    print(
        f"{args.messages} messages of ~{SIZE // 1000} KB per contender, Dovecot over implicit TLS"
    )
    header = ("delay", "contender", "msg/s", "ms/msg", "vs imaplib", "vs imapclient")
    print("  ".join(f"{h:>14}" for h in header))
    for delay_text in dict.fromkeys(r[0] for r in rows):
        group = [r for r in rows if r[0] == delay_text]
        base = {r[1]: r[2] for r in group}
        for delay_label, name, rate, ms in group:
            cells = (
                delay_label, name, f"{rate:.1f}", f"{ms:.1f}",
                f"{rate / base['imaplib']:.2f}x", f"{rate / base['imapclient']:.2f}x",
            )  # fmt: skip
            print("  ".join(f"{c:>14}" for c in cells))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("all stored and counted" if not problems else f"{len(problems)} PROBLEM(S)")
    return 1 if problems else 0


def folder_name(contender: str, delay: float) -> str:
    return f"Bench-{contender.replace(' ', '-')}-{delay:g}ms"


def run_delay(
    host: str,
    port: int,
    context: ssl.SSLContext,
    ca_file: str,
    delay: float,
    args: argparse.Namespace,
) -> list[tuple[str, str, float, float]]:
    run = uuid.uuid4().hex
    batch = messages(args.messages, run)
    names = ["imaplib", "imapclient", "mailbridge 1", f"mailbridge {THREADS}"]
    with imapclient.IMAPClient(host, port, ssl=True, ssl_context=context) as admin:
        admin.login(USER, PASSWORD)
        for name in names:
            admin.create_folder(folder_name(name, delay))
    rows = []
    for name in names:
        folder = folder_name(name, delay)
        print(f"  {delay:g} ms, {name} ...", flush=True)
        if name == "imaplib":
            seconds = run_imaplib(host, port, context, folder, batch)
        elif name == "imapclient":
            seconds = run_imapclient(host, port, context, folder, batch)
        else:
            archiver = _archiver(host, port, ca_file, folder)
            try:
                seconds = run_mailbridge(archiver, batch, int(name.split()[1]))
            finally:
                archiver.close()
        rate = len(batch) / seconds
        rows.append((f"{delay:g} ms", name, rate, 1000 / rate))
    return rows


if __name__ == "__main__":
    sys.exit(main())
