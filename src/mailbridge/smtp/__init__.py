"""The SMTP connection layer: TLS, AUTH, PIPELINING, transactions and transports."""

from .._results import ConnectionReport, Step, Transaction
from ._async_connection import AsyncSmtpConnection
from ._async_pool import AsyncConnectionPool, AsyncSmtpTransport, AsyncTransport
from ._async_probe import probe_smtp_async
from ._core import frame_data
from .connection import SmtpConnection
from .pool import ConnectionPool
from .probe import probe_smtp
from .transport import SmtpTransport, Transport

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
