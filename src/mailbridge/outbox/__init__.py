"""The durable outbox: messages stored in SQLite or PostgreSQL, sent by workers, never twice.

`Outbox.open(url)`, `outbox.enqueue(tenant, email)`, `outbox.status(id)`,
`outbox.worker(resolve_client).run()`; see docs/outbox.md.
"""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._bounce_state import BounceHandler, OutboxSentIndex
    from ._dialect import Dialect
    from ._open import open_store
    from ._outbox import Outbox
    from ._sending import Backoff
    from ._sql import SqlStore
    from ._status import ErrorInfo, MessageStatus
    from ._store import (
        BounceRecord,
        Claimed,
        Envelope,
        NewMessage,
        Outcome,
        Row,
        State,
        Store,
        TenantLimits,
    )
    from ._worker import Worker, WorkerStats

__all__ = [
    "Backoff",
    "BounceHandler",
    "BounceRecord",
    "Claimed",
    "Dialect",
    "Envelope",
    "ErrorInfo",
    "MessageStatus",
    "NewMessage",
    "Outbox",
    "OutboxSentIndex",
    "Outcome",
    "Row",
    "SqlStore",
    "State",
    "Store",
    "TenantLimits",
    "Worker",
    "WorkerStats",
    "open_store",
]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._bounce_state": ("BounceHandler", "OutboxSentIndex"),
            "._dialect": ("Dialect",),
            "._open": ("open_store",),
            "._outbox": ("Outbox",),
            "._sending": ("Backoff",),
            "._sql": ("SqlStore",),
            "._status": ("ErrorInfo", "MessageStatus"),
            "._store": (
                "BounceRecord",
                "Claimed",
                "Envelope",
                "NewMessage",
                "Outcome",
                "Row",
                "State",
                "Store",
                "TenantLimits",
            ),
            "._worker": ("Worker", "WorkerStats"),
        },
        globals(),
    )
