"""A configured mailbridge mailer by alias: its options, a tenant's client, its outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from .._client import DeliveryClient
from ..errors import ConfigurationError
from ._backend import DEFAULT_ALIAS, client_of, probe_message
from ._checks import mailbridge_mailers
from ._options import Options, load_options, mailbridge_settings
from ._outbox_mode import outbox_at

if TYPE_CHECKING:
    from ..outbox import Outbox

__all__ = ["mailer_options", "mailer_outbox", "tenant_client"]


def mailer_options(using: str | None = None) -> tuple[str, Options]:
    """The alias and options of mailer `using` (default: MAILBRIDGE["MAILER"], else
    "default"), which must use mailbridge's backend."""
    alias = using or str(mailbridge_settings().get("MAILER") or DEFAULT_ALIAS)
    mailers = mailbridge_mailers()
    if alias == DEFAULT_ALIAS and not hasattr(settings, "MAILERS"):
        mailers.setdefault(alias, {})  # classic settings: MAILBRIDGE alone (also in tests)
    if alias not in mailers:
        known = ", ".join(sorted(mailers)) or "none"
        raise ConfigurationError(
            "using", f"{alias!r} is not a mailer using mailbridge (those are: {known})"
        )
    return alias, load_options(mailers[alias])


def tenant_client(tenant: str, *, using: str | None = None) -> DeliveryClient:
    """The client of `tenant` (your resolver, asked with a message whose `tenant` it is).

    An outbox worker's `resolve_client`: `outbox.worker(tenant_client)`.
    """
    alias, options = mailer_options(using)
    return client_of(probe_message(tenant), options, alias)


def mailer_outbox(using: str | None = None) -> Outbox:
    """The outbox of a mailer in outbox mode, e.g. to read statuses or run a worker."""
    _, options = mailer_options(using)
    if options.outbox is None:
        raise ConfigurationError("OUTBOX", "this mailer is not in outbox mode")
    return outbox_at(options.outbox)
