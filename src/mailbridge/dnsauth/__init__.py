"""Sender authentication over DNS: SPF (RFC 7208), the SPF record to publish, DKIM signing."""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._dkim import DkimSigner
    from ._spf import SpfResult, SpfVerdict, check_host
    from ._spf_plan import SpfPlan, SpfPlanStatus, plan_include

__all__ = [
    "DkimSigner",
    "SpfPlan",
    "SpfPlanStatus",
    "SpfResult",
    "SpfVerdict",
    "check_host",
    "plan_include",
]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._dkim": ("DkimSigner",),
            "._spf": ("SpfResult", "SpfVerdict", "check_host"),
            "._spf_plan": ("SpfPlan", "SpfPlanStatus", "plan_include"),
        },
        globals(),
    )
