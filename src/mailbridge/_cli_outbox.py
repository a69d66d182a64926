"""`mailbridge outbox …`: migrate the schema, run a worker, inspect and act on messages."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, MailbridgeError

if TYPE_CHECKING:
    from .outbox import MessageStatus, Outbox

__all__ = ["add_outbox_commands"]

URL_ENV = "MAILBRIDGE_OUTBOX_URL"
EXIT_OK, EXIT_FAILED = 0, 1
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration such as 30d, 12h or 90m: {text!r}")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number above 0: {text!r}")
    return int(text)


def _resolver(spec: str) -> Callable[[str], Any]:
    """`package.module:function` imported; every failure is a usage error."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigurationError("resolver", "give it as package.module:function")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except ImportError as exc:
        raise ConfigurationError("resolver", f"cannot import {module_name}: {exc}") from None
    except SyntaxError as exc:
        raise ConfigurationError("resolver", f"cannot import {module_name}: {exc}") from None
    except Exception as exc:  # the application's module failed: its text may hold a secret
        problem = type(exc).__name__
        raise ConfigurationError("resolver", f"importing {module_name} raised {problem}") from None
    except AttributeError:
        raise ConfigurationError("resolver", f"{module_name} has no {name}") from None
    if not callable(function):
        raise ConfigurationError("resolver", f"{spec} is not a function")
    return function  # type: ignore[no-any-return]


def _database_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in {"sqlite3", "psycopg"}


def _open(args: argparse.Namespace, *, migrate: bool = False) -> Outbox:
    from .outbox import Outbox

    url = args.url or os.environ.get(URL_ENV)
    if not url:
        raise ConfigurationError("url", f"give --url or set {URL_ENV}")
    if not migrate and url.partition(":")[0].lower() == "sqlite":
        from .outbox._sqlite import sqlite_path

        path = sqlite_path(url)[0]  # a typo must not leave an empty database behind
        if path != ":memory:" and not os.path.exists(path):
            raise ConfigurationError(
                "url", f"no outbox at {path}: create it with `mailbridge outbox migrate`"
            )
    return Outbox.open(url, migrate=migrate)


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A database's own errors (locked, disk full, refused) explained in one line."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (MailbridgeError, OSError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if not _database_error(exc):
                raise
            print(f"mailbridge: the outbox database failed: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _cmd_migrate(args: argparse.Namespace) -> int:
    with _open(args, migrate=True) as outbox:
        print(f"outbox schema version {outbox.store.schema_version()}")
    return EXIT_OK


class _Progress:
    """One line on stderr, rewritten as outcomes arrive: sent, retried, failed, unknown."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, message: object, state: object) -> None:
        with self.lock:
            key = str(state)
            self.counts[key] = self.counts.get(key, 0) + 1
            if self.enabled:
                print(f"\r{self.line()}", end="", file=sys.stderr, flush=True)

    def line(self) -> str:
        names = (("sent", "sent"), ("queued", "retrying"), ("failed", "failed"))
        parts = [f"{label} {self.counts.get(key, 0)}" for key, label in names]
        parts += [f"unknown {self.counts.get('outcome_unknown', 0)}"]
        parts += [f"parked {self.counts.get('parked', 0)}"]
        return "  ".join(parts)


def _cmd_worker(args: argparse.Namespace) -> int:
    from .outbox import Backoff

    resolve = _resolver(args.resolver)
    progress = _Progress(not args.quiet)
    with _open(args) as outbox:
        worker = outbox.worker(
            resolve,
            concurrency=args.concurrency,
            lease=args.lease,
            backoff=Backoff(),
            on_outcome=progress,
        )
        worker.run(until_idle=args.until_idle)
    if not args.quiet:
        print(f"\r{progress.line()}", file=sys.stderr)
    return EXIT_OK


def _say(line: str) -> None:
    """Print one line of stored text: a server's reply may carry terminal escapes."""
    from .outbox._status import printable

    print(printable(line))


def _show(status: MessageStatus) -> None:
    _say(f"{status.id}  {status.state.value}  {status.summary}")
    _say(f"  tenant {status.tenant}  message-id {status.message_id}  attempts {status.attempts}")
    _say(f"  to {', '.join(status.recipients)}")
    _say(f"  created {status.created_at:%Y-%m-%d %H:%M:%S} UTC")
    if status.error is not None:
        _say(f"  last error: {status.error.type}: {status.error.message}")
        if status.error.diagnosis is not None:
            for line in str(status.error.diagnosis).splitlines():
                _say(f"    {line}")


def _cmd_status(args: argparse.Namespace) -> int:
    with _open(args) as outbox:
        if args.id:
            _show(outbox.status(args.id))
            return EXIT_OK
        counts = outbox.counts(tenant=args.tenant)
        for state, count in sorted(counts.items()):
            print(f"{state.value:<16} {count}")
        if not counts:
            print("the outbox is empty")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from .outbox import State

    try:
        state = None if args.state is None else State(args.state)
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise ConfigurationError("state", f"use one of {names}") from None
    with _open(args) as outbox:
        for status in outbox.messages(tenant=args.tenant, state=state, limit=args.limit):
            _say(f"{status.id}  {status.state.value:<15} {status.tenant:<16} {status.summary}")
    return EXIT_OK


def _cmd_retry(args: argparse.Namespace) -> int:
    with _open(args) as outbox:
        if outbox.retry(args.id, force=args.force):
            print(f"{args.id} queued again")
            return EXIT_OK
        state = outbox.status(args.id).state.value
        hint = " (add --force: it may arrive twice)" if state == "outcome_unknown" else ""
        print(f"mailbridge: {args.id} is {state}; not retried{hint}", file=sys.stderr)
    return EXIT_FAILED


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _open(args) as outbox:
        if outbox.cancel(args.id):
            print(f"{args.id} cancelled")
            return EXIT_OK
        state = outbox.status(args.id).state.value
        print(f"mailbridge: {args.id} is {state}; only queued messages can be cancelled",
              file=sys.stderr)  # fmt: skip
    return EXIT_FAILED


def _cmd_purge(args: argparse.Namespace) -> int:
    with _open(args) as outbox:
        print(f"{outbox.purge(older_than=args.older_than)} message(s) deleted")
    return EXIT_OK


def add_outbox_commands(commands: Any) -> None:
    """Register `mailbridge outbox …` on the main parser's sub-commands."""
    outbox = commands.add_parser("outbox", help="the durable outbox: workers and statuses")
    sub = outbox.add_subparsers(dest="outbox_command", required=True)

    def command(name: str, help: str, handler: Callable[[argparse.Namespace], int]) -> Any:
        parser = sub.add_parser(name, help=help)
        parser.add_argument("--url", help=f"sqlite:///path or postgresql://… (or {URL_ENV})")
        parser.set_defaults(handler=_guarded(handler))
        return parser

    command("migrate", "create or upgrade the outbox tables", _cmd_migrate)
    worker = command("worker", "send queued messages until stopped (SIGTERM)", _cmd_worker)
    worker.add_argument(
        "--resolver",
        required=True,
        metavar="MODULE:FUNCTION",
        help="your function tenant -> DeliveryClient, e.g. myapp.mail:client_for",
    )
    worker.add_argument("--concurrency", type=_positive_int, default=None)
    worker.add_argument("--lease", type=float, default=60.0, help="seconds (renewed in flight)")
    worker.add_argument("--until-idle", action="store_true", help="stop when nothing is due")
    worker.add_argument("--quiet", action="store_true", help="no progress line")
    status = command("status", "counts per state, or one message's status", _cmd_status)
    status.add_argument("id", nargs="?")
    status.add_argument("--tenant")
    listing = command("list", "messages, newest first", _cmd_list)
    listing.add_argument("--tenant")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=_positive_int, default=50)
    retry = command("retry", "queue a failed, parked or cancelled message again", _cmd_retry)
    retry.add_argument("id")
    retry.add_argument("--force", action="store_true", help="also an outcome_unknown message")
    cancel = command("cancel", "withdraw a queued message", _cmd_cancel)
    cancel.add_argument("id")
    purge = command("purge", "delete sent, failed and cancelled messages", _cmd_purge)
    purge.add_argument("--older-than", type=_duration, required=True, help="e.g. 30d, 12h")
