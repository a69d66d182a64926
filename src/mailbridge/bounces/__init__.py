"""Bounces: reading delivery-status notifications, complaints and auto-replies, tying them
to the sent message, and collecting them from an IMAP folder (see docs/bounces.md)."""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._collector import BounceBatch, BounceCollector, BounceEvent
    from ._correlate import (
        Correlation,
        MemorySentIndex,
        SentIndex,
        SentRef,
        correlate,
        verp_token,
    )
    from ._model import BounceRecipient, BounceReport, Reason
    from ._parse import parse_bounce

__all__ = [
    "BounceBatch",
    "BounceCollector",
    "BounceEvent",
    "BounceRecipient",
    "BounceReport",
    "Correlation",
    "MemorySentIndex",
    "Reason",
    "SentIndex",
    "SentRef",
    "correlate",
    "parse_bounce",
    "verp_token",
]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._collector": ("BounceBatch", "BounceCollector", "BounceEvent"),
            "._correlate": (
                "Correlation",
                "MemorySentIndex",
                "SentIndex",
                "SentRef",
                "correlate",
                "verp_token",
            ),
            "._model": ("BounceRecipient", "BounceReport", "Reason"),
            "._parse": ("parse_bounce",),
        },
        globals(),
    )
