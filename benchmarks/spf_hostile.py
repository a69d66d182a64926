"""Hostile SPF records: worst wall time and peak memory of check_host() per record size.

A tenant controls its SPF record. Each record below is served by an in-process
FakeDnsServer for a long domain (253 characters, either 63-character or 1-character
labels) and checked with `timeout=1` and `timeout=5`:

* exists   `v=spf1 exists:%{d}%{d}...` (issue 12, item 1)
* exp      `v=spf1 -all exp=%{d}%{d}...` with an explanation of `%{d}%{d}...`
* modifier `v=spf1 moo=%{d}%{d}... -all` (an unknown modifier, never expanded)
* include  ten `include:` terms whose targets each hold the same `exists:` record

    python benchmarks/spf_hostile.py [--sizes 8 24 58] [--timeouts 1 5] [--variants exists]

Wall time is measured without tracing; peak memory in a second run under tracemalloc
(Python allocations of the whole process, the fake DNS server's included).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import dns.resolver

from mailbridge.dnsauth import check_host
from mailbridge.testing import FakeDnsServer

ZONE = "example.com"
IP = "192.0.2.1"


def long_domain(label: int) -> str:
    """A 252/253-character name in ZONE made of `label`-character labels."""
    labels: list[str] = []
    while len(".".join([*labels, "x" * label, ZONE])) <= 253:
        labels.append(chr(ord("a") + len(labels) % 26) * label)
    rest = 253 - len(".".join([*labels, ZONE])) - 1
    if rest > 0:
        labels.append("z" * rest)
    return ".".join([*labels, ZONE])


def macros(size: int, prefix: str, suffix: str = "") -> str:
    """`prefix` + %{d}%{d}... + `suffix`, at most `size` bytes (3 fewer at worst)."""
    return prefix + "%{d}" * ((size - len(prefix) - len(suffix)) // 4) + suffix


def txt(record: str) -> str:
    return " ".join(f'"{record[i : i + 250]}"' for i in range(0, len(record), 250))


def setup(server: FakeDnsServer, variant: str, domain: str, size: int) -> None:
    server.remove_records(domain)
    if variant == "exists":
        server.add_record(domain, "TXT", txt(macros(size, "v=spf1 exists:", "")))
    elif variant == "exp":
        server.add_record(domain, "TXT", txt(macros(size, "v=spf1 -all exp=")))
        for label in range(1, 6):  # wherever the truncated exp= name lands: the same text
            name = domain.split(".", label)[-1]
            if name.count(".") >= 1 and name != ZONE:
                server.remove_records(name, "TXT")
                server.add_record(name, "TXT", txt(macros(size, "")))
    elif variant == "modifier":
        server.add_record(domain, "TXT", txt(macros(size, "v=spf1 moo=", " -all")))
    elif variant == "include":
        per = size // 10
        terms = " ".join(f"include:i{n}.{ZONE}" for n in range(10))
        server.add_record(domain, "TXT", txt(f"v=spf1 {terms} -all"))
        for n in range(10):
            server.remove_records(f"i{n}.{ZONE}", "TXT")
            server.add_record(f"i{n}.{ZONE}", "TXT", txt(macros(per, "v=spf1 exists:", " ~all")))
    else:
        raise SystemExit(f"unknown variant {variant}")


def measure(call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 24, 58], help="KB")
    parser.add_argument("--timeouts", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument("--variants", nargs="+", default=["exists", "exp", "modifier", "include"])
    parser.add_argument("--labels", type=int, nargs="+", default=[63, 1])
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    args = parser.parse_args()
    print(f"{'record':>7} {'timeout':>7}  {'worst time':>10}  {'peak memory':>11}  worst case")
    worst_overall = 0.0
    with FakeDnsServer({ZONE: {}}) as server:
        resolver: dns.resolver.Resolver = server.resolver(timeout=5)
        for size_kb in args.sizes:
            size = size_kb * 1024
            for timeout in args.timeouts:
                worst = (0.0, "", "")
                peak = 0
                for label in args.labels:
                    domain = long_domain(label)
                    for variant in args.variants:
                        setup(server, variant, domain, size)

                        def call(domain: str = domain, timeout: float = timeout) -> object:
                            return check_host(
                                IP, domain, f"x@{domain}", resolver=resolver, timeout=timeout
                            )

                        seconds, result = measure(call)
                        case = f"{variant}, {label}-char labels: {result.result}"  # type: ignore[attr-defined]
                        if seconds >= worst[0]:
                            worst = (seconds, case, "")
                        if not args.no_memory:
                            tracemalloc.start()
                            call()
                            peak = max(peak, tracemalloc.get_traced_memory()[1])
                            tracemalloc.stop()
                worst_overall = max(worst_overall, worst[0] - timeout)
                memory = "-" if args.no_memory else f"{peak / 2**20:8.2f} MiB"
                print(
                    f"{size_kb:>5} KB {timeout:>6.0f}s  {worst[0]:>9.3f}s  {memory:>11}  {worst[1]}"
                )
    print(f"worst time past the deadline: {max(0.0, worst_overall):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
