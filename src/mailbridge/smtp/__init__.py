"""The SMTP connection layer: TLS, AUTH, PIPELINING, transactions and transports."""

from .connection import SmtpConnection, Step, Transaction
from .pool import ConnectionPool
from .probe import ConnectionReport, probe_smtp
from .transport import SmtpTransport, Transport
from .wire import frame_data

__all__ = [
    "ConnectionPool",
    "ConnectionReport",
    "SmtpConnection",
    "SmtpTransport",
    "Step",
    "Transaction",
    "Transport",
    "frame_data",
    "probe_smtp",
]
