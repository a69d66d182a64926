"""The connection test behind *Test connection*, for asyncio (see `probe.py`)."""

from __future__ import annotations

from collections.abc import Callable

from .._results import ConnectionReport, Step
from ..errors import DeliveryError
from ..settings import SmtpSettings
from ._async_connection import AsyncSmtpConnection
from .probe import Probe

__all__ = ["probe_smtp_async"]


async def probe_smtp_async(
    settings: SmtpSettings,
    *,
    try_alternative: bool = True,
    observer: Callable[[Step], None] | None = None,
) -> ConnectionReport:
    """Open a connection step by step, log in, say QUIT, and report what happened."""
    probe = Probe(settings, observer)
    try:
        connection = await AsyncSmtpConnection.open(
            settings, observer=probe.record, greeting_timeout=probe.greeting_timeout
        )
    except DeliveryError as exc:
        candidate = probe.alternative(exc, try_alternative)
        if candidate is None:
            return probe.failed(exc)
        result = await probe_smtp_async(candidate, try_alternative=False, observer=observer)
        return probe.failed(exc, (candidate, result))
    report = probe.succeeded(connection.extensions)
    await connection.quit()
    return report
