"""The backend's options: `settings.MAILBRIDGE`, overridden by a mailer's OPTIONS / kwargs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from django.conf import settings
from django.utils.module_loading import import_string

from .._client import DeliveryClient
from ..errors import ConfigurationError
from ._clients import DEFAULT_MAX_CLIENTS, Tenant
from ._convert import DEFAULT_TENANT_HEADER
from ._outbox_mode import check_outbox_value

__all__ = ["OPTION_NAMES", "SETTING_NAMES", "Options", "load_options", "mailbridge_settings"]

Resolver = Callable[[Any], "DeliveryClient | Tenant | None"]
# backend keyword (a MAILERS "OPTIONS" key) -> key of settings.MAILBRIDGE
OPTION_NAMES = {
    "tenant_resolver": "TENANT_RESOLVER",
    "tenant_header": "TENANT_HEADER",
    "max_clients": "MAX_CLIENTS",
    "outbox": "OUTBOX",
    "outbox_dispatch": "OUTBOX_DISPATCH",
    "outbox_database": "OUTBOX_DATABASE",
}

# every key settings.MAILBRIDGE may hold
SETTING_NAMES = frozenset({*OPTION_NAMES.values(), "MAILER"})
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field name: printable ASCII but ":"


@attrs.frozen
class Options:
    """What one backend instance works with."""

    resolver: Resolver
    tenant_header: str = DEFAULT_TENANT_HEADER
    max_clients: int = DEFAULT_MAX_CLIENTS
    outbox: Any = None  # outbox mode: an `Outbox` or its URL
    dispatch: Callable[[str], object] | None = None  # called with each outbox id on commit
    database: str = "default"  # the Django database whose transaction counts


def mailbridge_settings() -> Mapping[str, Any]:
    """`settings.MAILBRIDGE`, or an empty mapping."""
    value = getattr(settings, "MAILBRIDGE", {})
    if not isinstance(value, Mapping):
        raise ConfigurationError("MAILBRIDGE", "must be a dict of options")
    return value


def resolve_callable(value: Any) -> Resolver:
    """A resolver given as a callable or as a dotted path ("app.mail.resolve")."""
    if value is None:
        raise ConfigurationError(
            "TENANT_RESOLVER",
            'no tenant resolver: set MAILBRIDGE = {"TENANT_RESOLVER": "app.mail.resolve"} '
            'or the mailer\'s OPTIONS {"tenant_resolver": ...}',
        )
    if isinstance(value, str):
        value = _imported("TENANT_RESOLVER", value)
    if not callable(value):
        raise ConfigurationError("TENANT_RESOLVER", "must be a callable or its dotted path")
    return value  # type: ignore[no-any-return]


def load_options(overrides: Mapping[str, Any]) -> Options:
    """The options of one backend: its keyword arguments over `settings.MAILBRIDGE`."""
    configured = mailbridge_settings()
    merged = {
        name: overrides[name] if overrides.get(name) is not None else configured.get(key)
        for name, key in OPTION_NAMES.items()
    }
    header = merged["tenant_header"] or DEFAULT_TENANT_HEADER
    if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
        raise ConfigurationError("TENANT_HEADER", f"{header!r} is not a header name")
    max_clients = DEFAULT_MAX_CLIENTS if merged["max_clients"] is None else merged["max_clients"]
    if not isinstance(max_clients, int) or isinstance(max_clients, bool) or max_clients < 1:
        raise ConfigurationError("MAX_CLIENTS", "must be a positive whole number")
    dispatch = merged["outbox_dispatch"]
    if isinstance(dispatch, str):
        dispatch = _imported("OUTBOX_DISPATCH", dispatch)
    if dispatch is not None and not callable(dispatch):
        raise ConfigurationError("OUTBOX_DISPATCH", "must be a callable or its dotted path")
    if merged["outbox"] is not None:
        check_outbox_value(merged["outbox"])
    return Options(
        resolve_callable(merged["tenant_resolver"]),
        header,
        max_clients,
        outbox=merged["outbox"],
        dispatch=dispatch,
        database=merged["outbox_database"] or "default",
    )


def _imported(field: str, path: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise ConfigurationError(field, f"cannot import {path!r}: {exc}") from None
