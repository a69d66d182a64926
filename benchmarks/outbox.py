"""The durable outbox on SQLite: enqueue rate, drain vs a direct send_many, latency, memory.

Everything runs on 127.0.0.1: a FakeSmtpServer and a `delayproxy.DelayProxy` (10 ms each
way by default) in a child process (`_bulk_server.ServerProcess`), the outbox's SQLite
file in a temporary directory, the worker in this process.

* enqueue: `outbox.enqueue()` of a DocumentEmail with a ~30 KB PDF (composed and
  stored) and of the same message already prepared (stored only), with the default
  `synchronous=FULL` and with `?synchronous=normal`.
* drain: the same N prepared messages sent by `client.send_many()` (default concurrency,
  one tenant) and drained by `outbox.worker().run(until_idle=True)` (defaults), both
  through the delay proxy; goal: outbox >= 0.9 x send_many.
* latency: an idle worker (its connection open), one message enqueued; time from before
  `enqueue()` to the worker's record of the 250 (median of --latency-runs); goal:
  < 2 round trips + 50 ms.
* memory: a child process drains 1,000 and then 10,000 small messages (no delay); its
  peak RSS and tracemalloc peak should stay flat.

    python benchmarks/outbox.py --quick
    python benchmarks/outbox.py --messages 2000 --delay-ms 10
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bulk_server import ServerProcess
from bulk import pdf_bytes

from mailbridge import Attachment, DeliveryClient, DocumentEmail, SmtpSettings
from mailbridge.outbox import Outbox, State

SENDER = "billing@acme.example"


def email(n: int, attachment: bytes) -> DocumentEmail:
    return DocumentEmail(
        to="jane@customer.example",
        subject=f"Invoice 2026-{n:05d}",
        body="Dear customer,\n\nplease find attached your invoice.\n",
        attachments=[Attachment("invoice.pdf", attachment)] if attachment else [],
    )


def settings(host: str, port: int) -> SmtpSettings:
    return SmtpSettings(host, port, "none", command_timeout=30.0, data_timeout=30.0)


def bench_enqueue(directory: Path, client: DeliveryClient, count: int) -> list[str]:
    lines = []
    attachment = pdf_bytes()
    for option in ("", "?synchronous=normal"):
        for kind in ("DocumentEmail", "prepared"):
            url = f"sqlite:///{directory / f'enqueue-{kind}{len(option)}.db'}{option}"
            with Outbox.open(url) as outbox:
                items = [email(n, attachment) for n in range(count)]
                if kind == "prepared":
                    items = [client.prepare(item) for item in items]  # type: ignore[misc]
                started = time.perf_counter()
                for item in items:
                    outbox.enqueue("acme", item, client=client)
                seconds = time.perf_counter() - started
            mode = option.partition("=")[2] or "full"
            lines.append(f"enqueue  {kind:<13} synchronous={mode:<6} {count / seconds:8.0f} msg/s")
    return lines


def bench_drain(directory: Path, host: str, port: int, count: int) -> tuple[float, float]:
    attachment = pdf_bytes()
    client = DeliveryClient.own_smtp(SENDER, settings(host, port))
    prepared = [client.prepare(email(n, attachment)) for n in range(count)]
    list(client.send_many(prepared[:12]))  # connections open, as for the outbox below
    started = time.perf_counter()
    outcomes = list(client.send_many(prepared))
    direct = count / (time.perf_counter() - started)
    assert all(outcome.ok for outcome in outcomes)
    client.close()

    url = f"sqlite:///{directory / 'drain.db'}"
    with Outbox.open(url) as outbox:
        warm = DeliveryClient.own_smtp(SENDER, settings(host, port))
        for item in prepared:
            outbox.enqueue("acme", item, client=warm)
        warm.close()
        worker = outbox.worker(lambda tenant: DeliveryClient.own_smtp(SENDER, settings(host, port)))
        started = time.perf_counter()
        stats = worker.run(until_idle=True)
        drained = count / (time.perf_counter() - started)
        assert stats.sent == count, stats
        assert outbox.counts() == {State.SENT: count}
    return direct, drained


def bench_latency(directory: Path, host: str, port: int, runs: int) -> list[float]:
    url = f"sqlite:///{directory / 'latency.db'}"
    client = DeliveryClient.own_smtp(SENDER, settings(host, port))
    done: dict[str, float] = {}
    event = threading.Event()

    def recorded(message: object, state: object) -> None:
        done[getattr(message, "id", "")] = time.perf_counter()
        event.set()

    with Outbox.open(url, resolve_client=lambda tenant: client) as outbox:
        worker = outbox.worker(on_outcome=recorded)
        thread = threading.Thread(target=worker.run)
        thread.start()
        latencies = []
        try:
            for n in range(runs + 1):
                prepared = client.prepare(email(n, b""))
                time.sleep(0.2)  # the worker is idle again
                event.clear()
                started = time.perf_counter()
                id = outbox.enqueue("acme", prepared)
                event.wait(10)
                if n:  # the first opens the connection
                    latencies.append(done[id] - started)
        finally:
            worker.stop()
            thread.join(30)
    client.close()
    return latencies


def memory_child(url: str, host: str, port: int) -> None:
    tracemalloc.start()
    with Outbox.open(url) as outbox:
        stats = outbox.worker(
            lambda tenant: DeliveryClient.own_smtp(SENDER, settings(host, port))
        ).run(until_idle=True)
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"sent": stats.sent, "tracemalloc_peak": peak, "max_rss_kb": _peak_rss()}))


def _peak_rss() -> int:
    """This process's peak RSS in KiB: VmHWM (ru_maxrss keeps the forking parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_memory(directory: Path, host: str, port: int, counts: list[int]) -> list[str]:
    lines = []
    client = DeliveryClient.own_smtp(SENDER, settings(host, port))
    for count in counts:
        url = f"sqlite:///{directory / f'memory-{count}.db'}?synchronous=normal"
        with Outbox.open(url) as outbox:
            for n in range(count):
                outbox.enqueue("acme", email(n, b""), client=client)
        output = subprocess.run(
            [sys.executable, __file__, "--memory-child", url, host, str(port)],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        ).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        assert figures["sent"] == count, figures
        lines.append(
            f"memory   drain {count:>6} messages: peak RSS {figures['max_rss_kb'] / 1024:6.1f} MiB,"
            f" tracemalloc peak {figures['tracemalloc_peak'] / 1048576:5.1f} MiB"
        )
    client.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per drain run")
    parser.add_argument("--enqueue", type=int, default=500, help="messages per enqueue run")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay")
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--memory", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if args.memory_child:
        url, host, port = args.memory_child
        memory_child(url, host, int(port))
        return
    if args.quick:
        args.messages, args.enqueue, args.latency_runs, args.memory = 200, 100, 5, [200, 1000]
    server = ServerProcess(fake=True, tls="none", chunking=False).start()
    try:
        host, port = server.info["host"], server.info["port"]
        proxy_port = server.proxy(host, port, args.delay_ms / 1000)
        with tempfile.TemporaryDirectory(prefix="mailbridge-outbox-bench-") as name:
            directory = Path(name)
            client = DeliveryClient.own_smtp(SENDER, settings(host, port))
            for line in bench_enqueue(directory, client, args.enqueue):
                print(line, flush=True)
            client.close()
            direct, drained = bench_drain(directory, host, proxy_port, args.messages)
            print(
                f"drain    {args.messages} messages, {args.delay_ms:g} ms each way: send_many "
                f"{direct:7.1f} msg/s, outbox {drained:7.1f} msg/s = {drained / direct:.2f}x",
                flush=True,
            )
            latencies = bench_latency(directory, host, proxy_port, args.latency_runs)
            rtt = 2 * args.delay_ms
            print(
                f"latency  enqueue -> 250 with an idle worker: median "
                f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f}"
                f" ms (goal < 2 x {rtt:g} + 50 = {2 * rtt + 50:g} ms)",
                flush=True,
            )
            for line in bench_memory(directory, host, port, args.memory):
                print(line, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
