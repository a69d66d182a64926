"""Hostile autoconfig servers: how long a fetch and discover() take when a server trickles.

A loopback HTTPS server answers every request with a 200 whose status line and
headers (or, in a second run, whose body) arrive one byte every 0.5 s. Prints
the worst wall time of `HttpsFetcher.fetch(timeout=2)` against each, the worst
wall time of `discover(timeout=3)` with that server as the domain's autoconfig
host, and how long discover()'s threads outlive its return.

    python benchmarks/fetch_hostile.py [--runs 5] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import trustme  # noqa: E402
from tests._trickle import TrickleServer  # noqa: E402

from mailbridge.providers import HttpsFetcher, discover  # noqa: E402
from mailbridge.testing import FakeDnsServer  # noqa: E402

DOMAIN = "slow.example"
FETCH_TIMEOUT = 2.0
DISCOVER_TIMEOUT = 3.0


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mailbridge-")]


def _outlived(returned: float, cap: float = 30.0) -> float:
    while _threads() and time.monotonic() - returned < cap:
        time.sleep(0.01)
    return time.monotonic() - returned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between bytes")
    args = parser.parse_args()
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(f"autoconfig.{DOMAIN}", DOMAIN, "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    zones = {DOMAIN: {"autoconfig": {"A": "127.0.0.1"}, "@": {"A": "127.0.0.1"}}}
    print(f"one byte every {args.interval} s, {args.runs} runs each, worst case:")
    with FakeDnsServer(zones) as dns:
        for part in ("headers", "body"):
            with TrickleServer(
                part, interval=args.interval, max_seconds=60, ssl_context=server_context
            ) as server:
                fetcher = HttpsFetcher(
                    resolver=dns.resolver(timeout=1),
                    ssl_context=client_context,
                    port=server.port,
                    allow_private=True,  # the hostile server is on loopback
                )
                fetch_times = []
                for _ in range(args.runs):
                    started = time.monotonic()
                    body = fetcher.fetch(f"https://autoconfig.{DOMAIN}/x", FETCH_TIMEOUT)
                    fetch_times.append(time.monotonic() - started)
                    if body is not None:
                        print("PROBLEM: a trickled document was accepted")
                        return 1
                discover_times, outlived = [], []
                for _ in range(args.runs):
                    started = time.monotonic()
                    discover(
                        f"x@{DOMAIN}",
                        resolver=dns.resolver(timeout=1),
                        fetcher=fetcher,
                        guess=False,
                        timeout=DISCOVER_TIMEOUT,
                    )
                    returned = time.monotonic()
                    discover_times.append(returned - started)
                    outlived.append(_outlived(returned))
            print(f"  {part} trickle:")
            print(f"    fetch(timeout={FETCH_TIMEOUT:g})      {max(fetch_times):6.3f} s")
            print(f"    discover(timeout={DISCOVER_TIMEOUT:g})   {max(discover_times):6.3f} s")
            print(f"    threads outlive discover()  {max(outlived):6.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
