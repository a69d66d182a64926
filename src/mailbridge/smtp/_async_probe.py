"""The connection test behind *Test connection*, for asyncio (see `probe.py`)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .._results import ConnectionReport, Step
from ..errors import DeliveryError
from ..settings import SmtpSettings
from ._async_connection import AsyncSmtpConnection
from .probe import (
    PROBE_GREETING_TIMEOUT,
    alternative_security,
    reached_smtp_over_tls,
    use_alternative,
)

__all__ = ["probe_smtp_async"]


async def probe_smtp_async(
    settings: SmtpSettings,
    *,
    try_alternative: bool = True,
    observer: Callable[[Step], None] | None = None,
) -> ConnectionReport:
    """Open a connection step by step, log in, say QUIT, and report what happened."""
    steps: list[Step] = []

    def record(step: Step) -> None:
        steps.append(step)
        if observer is not None:
            observer(step)

    try:
        connection = await AsyncSmtpConnection.open(
            settings,
            observer=record,
            greeting_timeout=min(settings.command_timeout, PROBE_GREETING_TIMEOUT),
        )
    except DeliveryError as exc:
        diagnosis = exc.diagnosis
        alternative = None
        failed = steps[-1].name if steps else ""
        other = alternative_security(settings, failed, diagnosis) if try_alternative else None
        if other is not None:
            candidate = attrs.evolve(settings, security=other)
            result = await probe_smtp_async(candidate, try_alternative=False, observer=observer)
            if reached_smtp_over_tls(result, other):
                alternative = candidate
                diagnosis = use_alternative(settings, other, result)
        return ConnectionReport(False, tuple(steps), diagnosis, exc, alternative)
    extensions = dict(connection.extensions)
    await connection.quit()
    return ConnectionReport(True, tuple(steps), extensions=extensions)
