"""What `DeliveryClient` and `AsyncDeliveryClient` decide alike, I/O aside.

Which transport a constructor's `transport` / `pool` / limits arguments give,
how many sends fill it, how an IMAP report joins the SMTP one, which recipients
the suppression list refuses, and what a connection test checks on blacklists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._results import ConnectionReport
from .errors import BlacklistError, ConfigurationError, RecipientsSuppressed
from .settings import SmtpSettings
from .smtp.pool import DEFAULT_CONCURRENCY, DEFAULT_MAX_PER_SERVER, DEFAULT_MESSAGES_IN_FLIGHT

if TYPE_CHECKING:
    from .composer import PreparedMessage
    from .deliverability import BlacklistCheck, BlacklistReport, SuppressionList

__all__ = [
    "blacklist_check",
    "blacklist_targets",
    "check_suppression",
    "choose_transport",
    "concurrency_of",
    "refuse_suppressed",
    "run_blacklist_check",
    "with_imap",
]

T = TypeVar("T")


def choose_transport(
    smtp: SmtpSettings,
    transport: T | None,
    pool: Any,
    max_per_server: int | None,
    messages_in_flight: int | None,
    *,
    protocol: type[object],
    pool_class: type[Any],
    make: Callable[[SmtpSettings, Any], T],
    methods: str,
) -> T:
    """The constructors' `transport` (checked against `protocol`, which `methods` names),
    or `make(smtp, pool)` over `pool` or a `pool_class` with these limits (the defaults
    when none is given)."""
    limited = max_per_server is not None or messages_in_flight is not None
    if transport is not None:
        if pool is not None or limited:
            raise ConfigurationError("transport", "give a transport or pool settings, not both")
        if not isinstance(transport, protocol):
            raise ConfigurationError("transport", f"must have {methods}")
        return transport
    if pool is not None:
        if limited:
            raise ConfigurationError("pool", "give a pool or its limits, not both")
        if not isinstance(pool, pool_class):
            name = pool_class.__name__
            article = "an" if name[0] in "AEIOU" else "a"
            raise ConfigurationError("pool", f"must be {article} {name}")
        return make(smtp, pool)
    if not limited:
        return make(smtp, None)
    return make(
        smtp,
        pool_class(
            max_per_server=DEFAULT_MAX_PER_SERVER if max_per_server is None else max_per_server,
            messages_in_flight=(
                DEFAULT_MESSAGES_IN_FLIGHT if messages_in_flight is None else messages_in_flight
            ),
        ),
    )


def concurrency_of(transport: object, smtp_transport: type[Any]) -> int:
    """Sends that fill the pool of `transport` when it is a `smtp_transport` (else the
    default pool's): connections x messages in flight."""
    if not isinstance(transport, smtp_transport):
        return DEFAULT_CONCURRENCY
    pool = transport.pool
    return int(pool.max_per_server * pool.messages_in_flight)


def with_imap(report: ConnectionReport, imap_report: ConnectionReport) -> ConnectionReport:
    """The SMTP connection test's `report` with the IMAP account's; ok only if both are."""
    return attrs.evolve(report, ok=report.ok and imap_report.ok, imap=imap_report)


def check_suppression(suppression: object) -> None:
    """Refuse a constructor's `suppression` that is not a `SuppressionList`."""
    if suppression is not None and not callable(getattr(suppression, "lookup", None)):
        raise ConfigurationError("suppression", "must be a SuppressionList (with lookup())")


def refuse_suppressed(
    suppression: SuppressionList | None, prepared: PreparedMessage, allowed: bool
) -> None:
    """Raise `RecipientsSuppressed` naming every envelope recipient on the list (before
    anything is sent), unless `allowed`."""
    if suppression is None or allowed:
        return
    found = suppression.lookup(prepared.recipients)
    if found:
        raise RecipientsSuppressed(found)


def blacklist_targets(smtp: SmtpSettings, sending_ips: Sequence[str] = ()) -> tuple[str, ...]:
    """What a connection test checks on blacklists: the relay's sending IPs when known,
    else the SMTP server's host name."""
    return tuple(sending_ips) or (smtp.host,)


def blacklist_check(blacklists: object) -> BlacklistCheck | None:
    """The check a `test_connection(blacklists=...)` asks for: True (the defaults), a
    `BlacklistCheck`, or False / None (none)."""
    from .deliverability import BlacklistCheck

    if blacklists is None or blacklists is False:
        return None
    if blacklists is True:
        return BlacklistCheck()
    if not isinstance(blacklists, BlacklistCheck):
        raise ConfigurationError("blacklists", "must be True, False or a BlacklistCheck")
    return blacklists


def run_blacklist_check(check: BlacklistCheck, targets: Iterable[str]) -> BlacklistReport:
    """`check.run(targets)`; a check that cannot start (no address) is reported, not raised."""
    from .deliverability import BlacklistReport

    targets = list(targets)
    started = time.monotonic()
    try:
        return check.run(targets)
    except BlacklistError as error:
        return BlacklistReport(", ".join(targets), (), (), time.monotonic() - started, error=error)
