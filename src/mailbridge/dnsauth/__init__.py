"""Sender authentication over DNS: SPF (RFC 7208)."""

from .spf import SpfResult, SpfVerdict, check_host

__all__ = ["SpfResult", "SpfVerdict", "check_host"]
