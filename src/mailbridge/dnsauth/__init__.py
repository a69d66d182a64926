"""Sender authentication over DNS: SPF (RFC 7208) evaluation and the record to publish."""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .spf import SpfResult, SpfVerdict, check_host
    from .spf_plan import SpfPlan, SpfPlanStatus, plan_include

__all__ = ["SpfPlan", "SpfPlanStatus", "SpfResult", "SpfVerdict", "check_host", "plan_include"]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            ".spf": ("SpfResult", "SpfVerdict", "check_host"),
            ".spf_plan": ("SpfPlan", "SpfPlanStatus", "plan_include"),
        },
        globals(),
    )
