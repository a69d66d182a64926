"""The durable outbox on PostgreSQL: enqueue rate, and drain rate with 1, 2 and 4 workers.

Everything runs on 127.0.0.1: a private PostgreSQL cluster (`RealPostgres`: initdb in a
temporary directory, durability off as in the tests, a new database per run; needs Debian's
postgresql package and psycopg), a FakeSmtpServer and a
`delayproxy.DelayProxy` (10 ms each way by default) in a child process
(`_bulk_server.ServerProcess`).

* enqueue: `outbox.enqueue()` in one process, of a DocumentEmail with a ~30 KB PDF (composed
  and stored) and of the same message already prepared (stored only).
* drain: N prepared messages drained through the delay proxy by 1, 2 and 4 worker
  *processes* (`outbox.worker().run(until_idle=True)`, default concurrency each), started
  together; the clock runs from their first claim until every message is recorded `sent`.
  For scale, a direct `client.send_many()` of the same messages from one process.
  Goal: near-linear in workers until the server or the network limits.
* latency: one idle worker process (listening), one message enqueued by this process; time
  until its row says `sent` (polled every millisecond). Goal: < 2 round trips + 50 ms.

    python benchmarks/outbox_postgres.py --quick
    python benchmarks/outbox_postgres.py --messages 2000 --delay-ms 10
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bulk_server import ServerProcess
from bulk import pdf_bytes
from outbox import SENDER, email, settings

from mailbridge import DeliveryClient
from mailbridge.outbox import Outbox, State
from mailbridge.smtp.pool import DEFAULT_CONCURRENCY
from mailbridge.testing.realpostgres import RealPostgres, postgres_availability

WORKER_START_LIMIT = 60.0
DRAIN_LIMIT = 900.0


def bench_enqueue(url: str, client: DeliveryClient, count: int) -> list[str]:
    lines = []
    attachment = pdf_bytes()
    for kind in ("DocumentEmail", "prepared"):
        with Outbox.open(url) as outbox:
            items: list[object] = [email(n, attachment) for n in range(count)]
            if kind == "prepared":
                items = [client.prepare(item) for item in items]  # type: ignore[arg-type]
            started = time.perf_counter()
            for item in items:
                outbox.enqueue("acme", item, client=client)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
        lines.append(f"enqueue  PostgreSQL {kind:<13} {count / seconds:8.0f} msg/s")
    return lines


def worker_child(url: str, host: str, port: int, until_idle: bool = True) -> None:
    """One worker process: open the outbox, say so, drain until idle (or SIGTERM)."""
    client = DeliveryClient.own_smtp(SENDER, settings(host, port))
    with Outbox.open(url) as outbox:
        worker = outbox.worker(lambda tenant: client)
        print("ready", flush=True)
        stats = worker.run(until_idle=until_idle, linger=1.0)
    print(f"sent {stats.sent}", flush=True)


def bench_latency(url: str, host: str, port: int, runs: int) -> list[float]:
    """Seconds from enqueue() to the recorded 250, an idle worker in another process."""
    client = DeliveryClient.own_smtp(SENDER, settings(host, port))
    child = subprocess.Popen(  # our own script
        [sys.executable, __file__, "--worker-child", url, host, str(port), "forever"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    latencies = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", "the worker did not start"
        with Outbox.open(url) as outbox:
            for n in range(runs + 1):
                prepared = client.prepare(email(n, b""))
                time.sleep(0.3)  # the worker is idle, listening
                started = time.perf_counter()
                id = outbox.enqueue("acme", prepared)
                while outbox.status(id).state is not State.SENT:
                    if time.perf_counter() - started > 10:
                        raise SystemExit("a message was not sent within 10 s")
                    time.sleep(0.001)
                if n:  # the first one opens the worker's connection
                    latencies.append(time.perf_counter() - started)
    finally:
        child.terminate()
        child.communicate(timeout=30)
        client.close()
    return latencies


@contextlib.contextmanager
def held_back(url: str) -> Iterator[None]:
    """PostgreSQL: claims wait while this holds the messages table (opening goes on)."""
    if not url.startswith("postgresql:"):
        yield
        return
    import psycopg

    with psycopg.connect(url) as connection:
        connection.execute("LOCK TABLE outbox_messages IN EXCLUSIVE MODE")
        yield


def drain_with_workers(url: str, host: str, port: int, workers: int, count: int) -> float:
    """Messages per second drained by `workers` processes started together."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with held_back(url):  # claims wait until every worker is ready
        children = [
            subprocess.Popen(  # our own script
                [sys.executable, __file__, "--worker-child", url, host, str(port)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(workers)
        ]
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", "a worker did not start"
        started = time.perf_counter()
    try:
        with Outbox.open(url) as outbox:
            deadline = started + DRAIN_LIMIT
            while outbox.counts().get(State.SENT, 0) < count:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"not drained within {DRAIN_LIMIT} s: {outbox.counts()}")
                time.sleep(0.005)
            seconds = time.perf_counter() - started
        sent = 0
        for child in children:
            output, _ = child.communicate(timeout=60)
            sent += int(output.split()[-1])
        assert sent == count, (sent, count)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    return count / seconds


def bench_drain(
    new_database: Callable[[], str], host: str, port: int, count: int, worker_counts: list[int]
) -> list[str]:
    attachment = pdf_bytes()
    client = DeliveryClient.own_smtp(SENDER, settings(host, port))
    prepared = [client.prepare(email(n, attachment)) for n in range(count)]
    list(client.send_many(prepared[:12]))  # connections open first, as a worker's are
    started = time.perf_counter()
    assert all(outcome.ok for outcome in client.send_many(prepared))
    direct = count / (time.perf_counter() - started)
    client.close()
    lines = [f"drain    direct send_many, one process       {direct:8.1f} msg/s"]
    first = None
    for workers in worker_counts:
        url = new_database()
        with Outbox.open(url) as outbox:
            for item in prepared:
                outbox.enqueue("acme", item, client=client)
        rate = drain_with_workers(url, host, port, workers, count)
        first = first or rate
        lines.append(
            f"drain    PostgreSQL, {workers} worker process(es)     {rate:8.1f} msg/s"
            f" = {rate / first:.2f}x one worker, {rate / direct:.2f}x send_many"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per drain run")
    parser.add_argument("--enqueue", type=int, default=500, help="messages per enqueue run")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--worker-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if args.worker_child:
        url, host, port, *forever = args.worker_child
        worker_child(url, host, int(port), until_idle=not forever)
        return
    if args.quick:
        args.messages, args.enqueue, args.latency_runs = 200, 100, 5
    directory = Path(tempfile.mkdtemp(prefix="mailbridge-outbox-pg-bench-"))
    postgres: RealPostgres | None = None
    server = ServerProcess(fake=True, tls="none", chunking=False).start()
    try:
        available, reason = postgres_availability()
        if not available:
            raise SystemExit(f"no PostgreSQL: {reason}")
        postgres = RealPostgres(directory)
        postgres.start()
        cluster = postgres

        def new_database() -> str:
            return cluster.url(cluster.create_database())

        host, port = server.info["host"], server.info["port"]
        proxy_port = server.proxy(host, port, args.delay_ms / 1000)
        print(
            f"PostgreSQL outbox, {args.delay_ms:g} ms each way, worker concurrency "
            f"{DEFAULT_CONCURRENCY} (default), {os.cpu_count()} CPUs",
            flush=True,
        )
        client = DeliveryClient.own_smtp(SENDER, settings(host, port))
        for line in bench_enqueue(new_database(), client, args.enqueue):
            print(line, flush=True)
        client.close()
        for line in bench_drain(new_database, host, proxy_port, args.messages, args.workers):
            print(line, flush=True)
        latencies = bench_latency(new_database(), host, proxy_port, args.latency_runs)
        rtt = 2 * args.delay_ms
        print(
            f"latency  enqueue -> 250, idle worker in another process (LISTEN/NOTIFY): median "
            f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
            f" (goal < 2 x {rtt:g} + 50 = {2 * rtt + 50:g} ms)",
            flush=True,
        )
    finally:
        server.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
