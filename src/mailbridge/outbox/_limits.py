"""A tenant's sending limits, from the provider registry by the client's SMTP server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import TooManyRecipients
from ..providers._registry import ProviderRegistry
from ..smtp.transport import SmtpTransport
from ._store import TenantLimits

if TYPE_CHECKING:
    from .._client import DeliveryClient
    from ..providers._models import Provider

__all__ = ["check_recipients", "limits_for"]


def _provider(registry: ProviderRegistry, host: str, sender_domain: str) -> Provider | None:
    """The provider behind `host`; where several share it (Gmail and Google Workspace use
    smtp.gmail.com), the one the sender's domain belongs to, else the custom-domain one."""
    host = host.lower().rstrip(".")

    def serves(provider: Provider) -> bool:
        return host in {e.host for e in provider.smtp} | set(provider.server_aliases)

    owner = registry.by_domain(sender_domain) if sender_domain else None
    if owner is not None and serves(owner):
        return owner
    matches = [p for p in registry if serves(p)]
    custom = [p for p in matches if not p.domains]
    found = custom or matches
    return found[0] if found else None


def limits_for(
    client: DeliveryClient, sender: str, registry: ProviderRegistry | None = None
) -> TenantLimits | None:
    """The limits of the provider `client` sends through, or None (no figures known)."""
    transport = client.transport
    if not isinstance(transport, SmtpTransport):
        return None
    provider = _provider(
        registry or ProviderRegistry.default(),
        transport.settings.host,
        sender.rpartition("@")[2].lower(),
    )
    if provider is None or provider.limits is None:
        return None
    limits = provider.limits
    return TenantLimits(
        provider.name,
        limits.per_minute,
        limits.per_day,
        limits.connections,
        per_minute_recipients=limits.per_minute_recipients,
        per_day_recipients=limits.per_day_recipients,
    )


def check_recipients(limits: TenantLimits | None, count: int) -> None:
    """Refuse a message to `count` addresses that no window of `limits` could ever let
    through: it would wait forever (TooManyRecipients names the limit)."""
    if limits is None:
        return
    for field, window in (("per_minute_recipients", "minute"), ("per_day_recipients", "day")):
        limit = getattr(limits, field)
        if limit is not None and count > limit:
            raise TooManyRecipients(count, field, limit, limits.provider, window)
