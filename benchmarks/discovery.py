"""Discovery with slow sources: concurrent (mailbridge) vs the same sources one after another.

Every source answers after a fixed delay (DNS answers and the autoconfig server are
delayed by FakeDnsServer / FakeAutoconfigServer); all on loopback. Prints both times
and the ratio.

    python benchmarks/discovery.py [--delay-ms 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mailbridge.providers import HttpsFetcher, discover
from mailbridge.providers import _sources as discovery_module
from mailbridge.settings import SmtpSettings
from mailbridge.testing import FakeAutoconfigServer, FakeDnsServer, client_config_xml

DOMAIN = "slow.example"
NAMES = [
    DOMAIN,
    f"_submissions._tcp.{DOMAIN}",
    f"_submission._tcp.{DOMAIN}",
    f"_imaps._tcp.{DOMAIN}",
    f"_imap._tcp.{DOMAIN}",
    f"autoconfig.{DOMAIN}",
]


def sequential(email: str, **kwargs: object) -> float:
    """The same sources as discover(), called one after the other."""
    started = time.perf_counter()
    original = discovery_module.concurrent.futures.ThreadPoolExecutor
    sources = dict(discovery_module._SOURCES)
    try:
        discovery_module.concurrent.futures.ThreadPoolExecutor = (  # type: ignore[misc]
            lambda max_workers=None: original(max_workers=1)
        )
        for name, source in sources.items():  # one source per call, one call after another
            discovery_module._SOURCES.clear()
            discovery_module._SOURCES[name] = source
            discover(email, **kwargs)  # type: ignore[arg-type]
    finally:
        discovery_module.concurrent.futures.ThreadPoolExecutor = original  # type: ignore[misc]
        discovery_module._SOURCES.clear()
        discovery_module._SOURCES.update(sources)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    zones = {
        DOMAIN: {
            "autoconfig": {"A": "127.0.0.1"},
            "@": {"MX": "10 mx.hoster.example."},
            "_submissions._tcp": {"SRV": f"0 1 465 mail.{DOMAIN}."},
        }
    }
    with FakeDnsServer(zones) as dns, FakeAutoconfigServer() as autoconfig:
        autoconfig.add_config(
            DOMAIN,
            client_config_xml(DOMAIN, smtp=SmtpSettings(f"mail.{DOMAIN}", 465, "implicit_tls")),
        )
        for name in NAMES:
            dns.delay(name, delay)
        autoconfig.delay_seconds = delay
        kwargs = {
            "resolver": dns.resolver(timeout=5),
            "fetcher": HttpsFetcher(
                resolver=dns.resolver(timeout=5),
                ssl_context=autoconfig.client_ssl_context(),
                port=autoconfig.port,
                allow_private=True,  # the fake autoconfig server is on loopback
            ),
            "guess": False,
            "timeout": 20.0,
            "allow_private": True,
        }
        concurrent_times, sequential_times = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = discover(f"x@{DOMAIN}", **kwargs)  # type: ignore[arg-type]
            concurrent_times.append(time.perf_counter() - started)
            sequential_times.append(sequential(f"x@{DOMAIN}", **kwargs))
    if not result.smtp:
        print("PROBLEM: discovery found nothing")
        return 1
    c, s = statistics.median(concurrent_times), statistics.median(sequential_times)
    print(f"every source delayed {args.delay_ms:.0f} ms, {args.runs} runs, medians:")
    print(f"  sources one after another  {s * 1000:8.1f} ms")
    print(f"  mailbridge (concurrent)    {c * 1000:8.1f} ms")
    print(f"  speed-up                   {s / c:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
