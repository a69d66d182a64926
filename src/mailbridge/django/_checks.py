"""System checks (`manage.py check`): a resolver that is missing, an option that cannot be
imported or is wrong, an alias that names no mailbridge mailer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core import checks

from ..errors import ConfigurationError
from ._options import SETTING_NAMES, load_options, mailbridge_settings

__all__ = ["BACKEND", "check_settings", "mailbridge_mailers"]

BACKEND = "mailbridge.django.EmailBackend"
_BACKENDS = {BACKEND, "mailbridge.django._backend.EmailBackend"}


def mailbridge_mailers() -> dict[str, Mapping[str, Any]]:
    """alias -> options of every mailer that uses mailbridge's backend.

    With Django 6.1's MAILERS, the entries whose BACKEND is ours; with EMAIL_BACKEND,
    "default" when it is ours.
    """
    mailers = getattr(settings, "MAILERS", None)
    if isinstance(mailers, Mapping):
        return {
            alias: config.get("OPTIONS", {})
            for alias, config in mailers.items()
            if isinstance(config, Mapping) and config.get("BACKEND") in _BACKENDS
        }
    if getattr(settings, "EMAIL_BACKEND", None) in _BACKENDS:
        return {"default": {}}
    return {}


def _errors(alias: str, options: Mapping[str, Any]) -> Iterator[checks.CheckMessage]:
    try:
        configured = mailbridge_settings()
        resolver = options.get("tenant_resolver") or configured.get("TENANT_RESOLVER")
        if resolver is None:
            yield checks.Error(
                f"The mailer {alias!r} uses mailbridge but no tenant resolver is set.",
                hint='Set MAILBRIDGE = {"TENANT_RESOLVER": "yourapp.mail.resolve"} (or '
                'OPTIONS {"tenant_resolver": ...} in MAILERS), a function that takes a '
                "message and returns a mailbridge.django.Tenant or a DeliveryClient.",
                id="mailbridge.E001",
            )
            return
        load_options(options)
    except ConfigurationError as exc:
        yield checks.Error(f"The mailer {alias!r}: {exc}", id="mailbridge.E002")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The mailbridge system checks."""
    try:
        configured = mailbridge_settings()
    except ConfigurationError as exc:
        return [checks.Error(f"The MAILBRIDGE setting: {exc}", id="mailbridge.E002")]
    found: list[checks.CheckMessage] = [
        checks.Warning(
            f"MAILBRIDGE[{key!r}] is not a mailbridge option; it is ignored.",
            hint=f"The options: {', '.join(sorted(SETTING_NAMES))}.",
            id="mailbridge.W001",
        )
        for key in configured
        if key not in SETTING_NAMES
    ]
    mailers = mailbridge_mailers()
    for alias, options in mailers.items():
        found.extend(_errors(alias, options))
    named = configured.get("MAILER")
    if named is not None and named not in mailers:
        found.append(
            checks.Error(
                f"MAILBRIDGE['MAILER'] names {named!r}, which is not a mailer using mailbridge.",
                hint=f"Mailers using {BACKEND}: {', '.join(sorted(mailers)) or 'none'}.",
                id="mailbridge.E003",
            )
        )
    return found
