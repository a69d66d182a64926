"""Argument types of the `mailbridge` command: bad values are usage errors, not bugs."""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["LazyVersion", "ip_address", "port", "seconds"]


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address literal (e.g. --ip, --nameserver)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 or IPv6 address: {text!r}") from None


def port(text: str) -> int:
    """A TCP/UDP port number, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1 to 65535): {text!r}")
    return value


def seconds(text: str) -> float:
    """A time-out: a finite number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text!r}")
    return value


class LazyVersion(argparse.Action):
    """`--version` that reads the installed version only when asked.

    Reading it loads `importlib.metadata` (and `email`, `zipfile`, ...): too slow to
    pay on every start of the command.
    """

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: Any = argparse.SUPPRESS,
        help: str = "show program's version number and exit",
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from ._distribution import version

        print(f"{parser.prog} {version()}")
        parser.exit()
