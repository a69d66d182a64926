"""Sender authentication over DNS: SPF (RFC 7208) evaluation and the record to publish."""

from .spf import SpfResult, SpfVerdict, check_host
from .spf_plan import SpfPlan, SpfPlanStatus, plan_include

__all__ = ["SpfPlan", "SpfPlanStatus", "SpfResult", "SpfVerdict", "check_host", "plan_include"]
