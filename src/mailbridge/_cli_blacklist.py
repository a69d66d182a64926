"""`mailbridge blacklist check HOST`: is a server on a DNS blacklist?

Exit codes: 0 listed nowhere (every list answered), 1 listed on at least one
list, 4 not listed where checked but some lists (or the host name) could not
be checked; 2 bad usage, as for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import dns.resolver

from . import _cli_args as _args
from .errors import BlacklistError, ConfigurationError

__all__ = ["EXIT_INCOMPLETE", "EXIT_LISTED", "add_blacklist_command"]

EXIT_CLEAN, EXIT_LISTED, EXIT_INCOMPLETE = 0, 1, 4


def add_blacklist_command(
    commands: Any,
    add_dns_options: Callable[[argparse.ArgumentParser], None],
    resolver: Callable[[argparse.Namespace], dns.resolver.Resolver],
) -> None:
    """Register `blacklist check` under the `commands` sub-parsers (cli.py's DNS options)."""
    parser = commands.add_parser("blacklist", help="check whether a server is on a blacklist")
    sub = parser.add_subparsers(dest="blacklist_command", required=True)
    check = sub.add_parser(
        "check",
        help="ask the DNS blacklists about an IP address or host name",
        description="Exit 0: listed nowhere; 1: listed; 4: some lists could not be checked.",
    )
    check.add_argument("host", help="IP address or host name (each of its addresses is checked)")
    check.add_argument(
        "--list",
        action="append",
        metavar="ZONE",
        dest="zones",
        help="ask this DNSBL zone instead of the default lists (repeat)",
    )
    check.add_argument(
        "--dqs-key-env",
        metavar="VAR",
        help="environment variable holding a Spamhaus DQS key (keys are never arguments)",
    )
    check.add_argument("--timeout", type=_args.seconds, default=10.0, help="seconds in all")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    add_dns_options(check)
    check.set_defaults(handler=lambda args: _cmd_check(args, resolver))


def _cmd_check(
    args: argparse.Namespace, resolver: Callable[[argparse.Namespace], dns.resolver.Resolver]
) -> int:
    from .deliverability import DEFAULT_BLACKLISTS, Blacklist, check_blacklists
    from .deliverability._lists import KNOWN_BLACKLISTS

    dqs_key = None
    if args.dqs_key_env:
        dqs_key = os.environ.get(args.dqs_key_env)
        if not dqs_key:
            raise ConfigurationError("dqs_key", f"{args.dqs_key_env} is not set")
    known = {blacklist.zone: blacklist for blacklist in KNOWN_BLACKLISTS}
    lists = (  # a known zone keeps its error codes (Spamhaus 127.255.255.x is no listing)
        [
            known.get(zone.lower().rstrip(".")) or Blacklist(name=zone, zone=zone)
            for zone in args.zones
        ]
        if args.zones
        else list(DEFAULT_BLACKLISTS)
    )
    try:
        report = check_blacklists(
            args.host,
            resolver=resolver(args),
            lists=lists,
            dqs_key=dqs_key,
            timeout=args.timeout,
        )
    except BlacklistError as error:
        print(f"mailbridge: {error}\n{error.diagnosis}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if args.json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        print(report)
    if report.listed:
        return EXIT_LISTED
    return EXIT_CLEAN if report.complete else EXIT_INCOMPLETE


def _as_json(report: Any) -> dict[str, Any]:
    return {
        "target": report.target,
        "addresses": list(report.addresses),
        "seconds": round(report.seconds, 3),
        "results": [
            {
                "address": r.address,
                "list": r.list_name,
                "zone": r.zone,
                "status": r.status.value,
                "codes": list(r.codes),
                "meanings": list(r.meanings),
                "reason": r.reason,
                "advice": str(r.diagnosis) if r.diagnosis else None,
            }
            for r in report.results
        ],
    }
