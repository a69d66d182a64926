"""Bounces: reading delivery-status notifications, complaints and auto-replies."""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._model import BounceRecipient, BounceReport, Reason
    from ._parse import parse_bounce

__all__ = ["BounceRecipient", "BounceReport", "Reason", "parse_bounce"]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._model": ("BounceRecipient", "BounceReport", "Reason"),
            "._parse": ("parse_bounce",),
        },
        globals(),
    )
