"""The SMTP connection layer: TLS, AUTH, PIPELINING, transactions and transports."""

from typing import TYPE_CHECKING

from .._lazy import exports
from .._results import ConnectionReport, Step, Transaction
from ._core import frame_data
from .connection import SmtpConnection
from .pool import ConnectionPool
from .probe import probe_smtp
from .transport import SmtpTransport, Transport

if TYPE_CHECKING:
    from ._async_connection import AsyncSmtpConnection
    from ._async_pool import AsyncConnectionPool, AsyncSmtpTransport, AsyncTransport
    from ._async_probe import probe_smtp_async

__all__ = [
    "AsyncConnectionPool",
    "AsyncSmtpConnection",
    "AsyncSmtpTransport",
    "AsyncTransport",
    "ConnectionPool",
    "ConnectionReport",
    "SmtpConnection",
    "SmtpTransport",
    "Step",
    "Transaction",
    "Transport",
    "frame_data",
    "probe_smtp",
    "probe_smtp_async",
]

if not TYPE_CHECKING:  # the asyncio layer (and asyncio) loads on first use
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._async_connection": ("AsyncSmtpConnection",),
            "._async_pool": ("AsyncConnectionPool", "AsyncSmtpTransport", "AsyncTransport"),
            "._async_probe": ("probe_smtp_async",),
        },
        globals(),
    )
