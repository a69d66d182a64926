"""One `DeliveryClient` per tenant for the whole process, whatever Django does with backends.

Django creates a new backend for every `send_mail()`; the clients (and their pooled,
already authenticated SMTP connections) live here instead, keyed by mailer alias and
tenant, least recently used first out when there are more than `max_clients`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import attrs

from .._client import DeliveryClient
from ..errors import ConfigurationError

__all__ = ["DEFAULT_MAX_CLIENTS", "Tenant", "client_for", "close_clients"]

DEFAULT_MAX_CLIENTS = 256


def _check_key(_: object, __: object, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError("Tenant.key", "must be a non-empty string")


@attrs.frozen
class Tenant:
    """What a tenant resolver returns: a stable `key` and how to `build` the tenant's client.

    The client is built once per key and process and reused; when `version` changes (the
    tenant edited their mail settings) the old client is closed and a new one built.
    """

    key: str = attrs.field(validator=_check_key)
    build: Callable[[], DeliveryClient] = attrs.field(eq=False, repr=False)
    version: Hashable = None


_lock = threading.Lock()
_clients: OrderedDict[tuple[str, str], tuple[Hashable, DeliveryClient]] = OrderedDict()


def client_for(
    alias: str, tenant: Tenant, max_clients: int = DEFAULT_MAX_CLIENTS
) -> DeliveryClient:
    """The pooled client of `tenant` for mailer `alias`, built (or rebuilt) when needed."""
    key = (alias, tenant.key)
    retired: list[DeliveryClient] = []
    with _lock:
        entry = _clients.get(key)
        if entry is not None and entry[0] == tenant.version:
            _clients.move_to_end(key)
            return entry[1]
        if entry is not None:
            retired.append(_clients.pop(key)[1])
        client = tenant.build()
        if not isinstance(client, DeliveryClient):
            raise ConfigurationError(
                "Tenant.build", f"must return a DeliveryClient, not {type(client).__name__}"
            )
        _clients[key] = (tenant.version, client)
        while len(_clients) > max_clients:
            retired.append(_clients.popitem(last=False)[1][1])
    for old in retired:  # outside the lock: sends in progress finish first
        old.close()
    return client


def close_clients() -> None:
    """Close every pooled client (at shutdown, or between tests)."""
    with _lock:
        clients = [client for _, client in _clients.values()]
        _clients.clear()
    for client in clients:
        client.close()
