"""What `DeliveryClient` and `AsyncDeliveryClient` decide alike, I/O aside.

Which transport a constructor's `transport` / `pool` / limits arguments give,
how many sends fill it, and how an IMAP report joins the SMTP one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._results import ConnectionReport
from .errors import ConfigurationError
from .settings import SmtpSettings
from .smtp.pool import DEFAULT_CONCURRENCY, DEFAULT_MAX_PER_SERVER, DEFAULT_MESSAGES_IN_FLIGHT

__all__ = ["choose_transport", "concurrency_of", "with_imap"]

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
