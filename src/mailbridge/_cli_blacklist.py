"""`mailbridge blacklist check HOST`, and `test-connection --blacklists`: is a server on a
DNS blacklist?

Exit codes: 0 listed nowhere (every list answered), 1 listed on at least one
list (test-connection: or the connection failed), 4 not listed where checked but
some lists (or the host name) could not be checked; 2 bad usage, as for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _cli_args as _args
from .errors import BlacklistError, ConfigurationError

if TYPE_CHECKING:
    import dns.resolver

    from ._results import ConnectionReport
    from .deliverability import BlacklistCheck, BlacklistReport

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_LISTED",
    "add_blacklist_command",
    "add_connection_options",
    "add_list_options",
    "blacklist_check",
    "blacklist_exit_code",
    "connection_blacklist_check",
    "connection_exit_code",
]

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
    add_list_options(check)
    check.add_argument("--timeout", type=_args.seconds, default=10.0, help="seconds in all")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    add_dns_options(check)
    check.set_defaults(handler=lambda args: _cmd_check(args, resolver))


def add_list_options(parser: argparse.ArgumentParser) -> None:
    """`--list ZONE` (repeat) and `--dqs-key-env VAR`: which lists, with which DQS key."""
    parser.add_argument(
        "--list",
        action="append",
        metavar="ZONE",
        dest="zones",
        help="ask this DNSBL zone instead of the default lists (repeat)",
    )
    parser.add_argument(
        "--dqs-key-env",
        metavar="VAR",
        help="environment variable holding a Spamhaus DQS key (keys are never arguments)",
    )


def blacklist_check(
    args: argparse.Namespace,
    resolver: Callable[[argparse.Namespace], dns.resolver.Resolver],
) -> BlacklistCheck:
    """The check the options of `add_list_options` (and cli.py's DNS options) ask for."""
    from .deliverability import DEFAULT_BLACKLISTS, Blacklist, BlacklistCheck
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
    return BlacklistCheck(
        resolver=resolver(args), lists=tuple(lists), dqs_key=dqs_key, timeout=args.timeout
    )


def add_connection_options(
    parser: argparse.ArgumentParser, add_dns_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    """`test-connection --blacklists`, with the list, DQS and DNS options of `blacklist check`."""
    parser.add_argument(
        "--blacklists",
        action="store_true",
        help="also ask the DNS blacklists about the server (implied by --list, --dqs-key-env)",
    )
    add_list_options(parser)
    add_dns_options(parser)


def connection_blacklist_check(
    args: argparse.Namespace,
    resolver: Callable[[argparse.Namespace], dns.resolver.Resolver],
) -> BlacklistCheck | None:
    """The check `test-connection` was asked for, or None (checked before connecting, so a
    missing DQS key is bad usage, exit 2)."""
    if not (args.blacklists or args.zones or args.dqs_key_env):
        return None
    return blacklist_check(args, resolver)


def connection_exit_code(report: ConnectionReport) -> int:
    """1 when the connection failed, else the blacklist verdict (0, 1 listed, 4 unchecked)."""
    if not report.ok:
        return EXIT_LISTED  # the connection's failure: exit 1 as without --blacklists
    return EXIT_CLEAN if report.blacklists is None else blacklist_exit_code(report.blacklists)


def blacklist_exit_code(report: BlacklistReport) -> int:
    """0 listed nowhere (every list answered), 1 listed, 4 some lists not checked."""
    if report.listed:
        return EXIT_LISTED
    return EXIT_CLEAN if report.complete else EXIT_INCOMPLETE


def _cmd_check(
    args: argparse.Namespace, resolver: Callable[[argparse.Namespace], dns.resolver.Resolver]
) -> int:
    check = blacklist_check(args, resolver)
    try:
        report = check.run([args.host])
    except BlacklistError as error:
        print(f"mailbridge: {error}\n{error.diagnosis}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if args.json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        print(report)
    return blacklist_exit_code(report)


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
