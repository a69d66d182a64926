"""Bulk sending on asyncio: mailbridge's AsyncDeliveryClient vs aiosmtplib and the sync client.

Same set-up as `bulk.py` (whose workload, proxies and checks it reuses): the
FakeSmtpServer and the delay proxies in a child process, the same ~30 KB
prepared message, connection set-up and one warm-up message per connection
untimed, every message counted and compared at the server afterwards.

* aiosmtplib xN: N connections, each sending its share in turn (its documented way);
* mailbridge sync xN: `DeliveryClient.send_many`, pool of N connections, 3 in flight each;
* mailbridge async send(): `await client.send(prepared)` in a loop, one at a time;
* mailbridge async xN: `AsyncDeliveryClient.send_many`, pool of N connections, 3 in flight.

    python benchmarks/async_bulk.py --quick
    python benchmarks/async_bulk.py --delay-ms 10 --recipients 3 --connections 1 4
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bulk_server import ServerProcess
from bulk import (
    AIOSMTPLIB,
    IN_FLIGHT,
    POOL_OPTIONS,
    Deadline,
    Run,
    Target,
    pdf_bytes,
    run_aiosmtplib,
    run_mailbridge_many,
)

from mailbridge import AsyncConnectionPool, AsyncDeliveryClient, PreparedMessage

ASYNC, SYNC = "mailbridge async", "mailbridge sync"
Reset = Callable[[], None]


def run_async(
    target: Target, data: PreparedMessage, limit: Deadline, reset: Reset, connections: int
) -> Run:
    """`send_many` over `connections` connections (0: `send()` in a loop, one connection)."""
    loop_mode = connections == 0
    name = f"{ASYNC} send()" if loop_mode else f"{ASYNC} x{connections}"
    pipelined = 1 / IN_FLIGHT if target.chunking else 1  # round trips per message
    run = Run(name, max(connections, 1), (1 if target.chunking else 2) if loop_mode else pipelined)
    errors: list[str] = []

    async def feed() -> AsyncIterator[PreparedMessage]:
        while limit.take():
            yield data

    async def main() -> None:
        pool = AsyncConnectionPool(
            max_per_server=max(connections, 1), messages_in_flight=IN_FLIGHT, **POOL_OPTIONS
        )
        async with AsyncDeliveryClient.own_smtp(
            target.sender, target.settings(), pool=pool
        ) as client:
            warm = client.send_many([data] * max(connections, 1))
            run.warmup = sum([outcome.ok async for outcome in warm])
            reset()
            limit.start()
            if loop_mode:
                while limit.take():
                    if not (await client.send(data)).ok:
                        raise RuntimeError("recipients refused")
                    run.sent += 1
            else:
                async for outcome in client.send_many(feed()):
                    if outcome.ok:
                        run.sent += 1
                    elif len(errors) < 3:
                        errors.append(f"{type(outcome.error).__name__}: {outcome.error}")
            run.seconds = limit.elapsed()
        await pool.aclose()

    asyncio.run(asyncio.wait_for(main(), limit.seconds + 120))
    run.error = "; ".join(errors)
    return run


def measure(
    target: Target, data: PreparedMessage, args: argparse.Namespace, helper: ServerProcess
) -> tuple[list[Run], list[str]]:
    def reset() -> None:
        helper.call("reset")

    runners: list[tuple[str, Callable[[Deadline], Run]]] = [
        (f"{ASYNC} send()", lambda lim: run_async(target, data, lim, reset, 0))
    ]
    for n in args.connections:
        runners += [
            (f"{AIOSMTPLIB} x{n}", lambda lim, n=n: run_aiosmtplib(target, data, lim, reset, n)),
            (f"{SYNC} x{n}", lambda lim, n=n: run_mailbridge_many(target, data, lim, reset, n)),
            (f"{ASYNC} x{n}", lambda lim, n=n: run_async(target, data, lim, reset, n)),
        ]
    runs, problems = [], []
    for name, runner in runners:
        before = int(helper.call("count"))
        run = runner(Deadline(args.messages, args.time_limit))
        run.contender = name
        runs.append(run)
        expected = run.sent + run.warmup
        received, intact = helper.call("check", before, data.data, list(target.recipients))
        if run.error:
            problems.append(f"{name}: {run.error}")
        if received != expected or intact != expected:
            problems.append(f"{name}: server got {received} ({intact} intact), sent {expected}")
    return runs, problems


def report(target: Target, runs: Sequence[Run], connections: Sequence[int]) -> list[str]:
    rates = {run.contender: run.rate for run in runs}
    lines = [
        f"{target.server}, {target.delay * 1000:g} ms each way, {len(target.recipients)} rcpt, "
        f"{target.security}:"
    ]
    for run in runs:
        limit = run.connections / (run.round_trips * 2 * target.delay)
        share = f"{run.rate / limit:4.0%} of limit" if AIOSMTPLIB not in run.contender else ""
        lines.append(
            f"  {run.contender:24} conns {run.connections:2}  sent {run.sent:5}  "
            f"{run.rate:8.1f} msg/s  {share}"
        )
    for n in connections:
        mine = rates.get(f"{ASYNC} x{n}", 0.0)
        theirs, sync = rates.get(f"{AIOSMTPLIB} x{n}"), rates.get(f"{SYNC} x{n}")
        ratios = []
        if theirs:
            ratios.append(f"async/aiosmtplib {mine / theirs:.2f}x")
        if sync:
            ratios.append(f"async/sync {mine / sync:.2f}x")
        lines.append(f"  x{n}: " + ", ".join(ratios))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="120 messages, 8 s per contender")
    parser.add_argument("--delay-ms", type=float, nargs="+", default=[10.0])
    parser.add_argument("--recipients", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--chunking", action="store_true", help="the server offers BDAT")
    parser.add_argument(
        "--per-connection",
        type=int,
        help="mailbridge's max_messages_per_connection (default: the library's, 100)",
    )
    args = parser.parse_args(argv)
    if args.per_connection is not None:
        if args.per_connection < 1:
            parser.error("--per-connection must be at least 1")
        POOL_OPTIONS["max_messages_per_connection"] = args.per_connection
    if args.quick:
        args.messages, args.time_limit = min(args.messages, 120), min(args.time_limit, 8.0)
    if importlib.util.find_spec("aiosmtplib") is None:
        print("aiosmtplib is needed: pip install aiosmtplib", file=sys.stderr)
        return 2
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    attachment = pdf_bytes()
    server = "aiosmtpd+chunking" if args.chunking else "aiosmtpd"
    output, problems = [], []
    with ServerProcess(fake=True, tls="none", users=None, chunking=args.chunking) as helper:
        host, port = helper.info["host"], helper.info["port"]
        for delay_ms in args.delay_ms:
            proxy_port = helper.proxy(host, port, delay_ms / 1000)
            for count in args.recipients:
                rcpts = tuple(f"customer{i}@example.test" for i in range(count))
                target = Target(
                    server, "127.0.0.1", proxy_port, False, None, None, None,
                    "billing@acme.example", rcpts, delay_ms / 1000, args.chunking,
                )  # fmt: skip
                print(f"  {delay_ms:g} ms, {count} rcpt ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                runs, found = measure(target, target.prepare(attachment), args, helper)
                output += [*report(target, runs, args.connections), ""]
                problems += found
                print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print("\n".join(output))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("all accepted and verified" if not problems else f"{len(problems)} PROBLEM(S)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
