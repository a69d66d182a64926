"""One `DeliveryClient` per tenant for the whole process, whatever Django does with backends.

Django creates a new backend for every `send_mail()`; the clients (and their pooled,
already authenticated SMTP connections) live here instead, keyed by mailer alias and
tenant, least recently used first out when there are more than `max_clients`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import attrs

from .._client import DeliveryClient
from ..errors import ConfigurationError

__all__ = ["DEFAULT_MAX_CLIENTS", "Tenant", "client_for", "close_clients", "leased_client"]

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


@attrs.define(eq=False)
class _Pooled:
    """A pooled client; `leases` counts the sends using it, so that a client replaced or
    evicted meanwhile is closed only when the last of them is done."""

    version: Hashable
    client: DeliveryClient
    leases: int = 0
    retired: bool = False


_lock = threading.Lock()
_clients: OrderedDict[tuple[str, str], _Pooled] = OrderedDict()
_building: dict[tuple[str, str], threading.Lock] = {}  # one build at a time per key


def _retire(entry: _Pooled, closing: list[DeliveryClient]) -> None:
    """Take `entry` out of service (under the lock): closed now if no send uses it."""
    entry.retired = True
    if entry.leases == 0:
        closing.append(entry.client)


def _leased(key: tuple[str, str], tenant: Tenant, lease: bool) -> _Pooled | None:
    """The current entry of `key` for `tenant`'s version, leased when asked (under the lock)."""
    entry = _clients.get(key)
    if entry is None or entry.version != tenant.version:
        return None
    _clients.move_to_end(key)
    entry.leases += lease
    return entry


def _acquire(alias: str, tenant: Tenant, max_clients: int, lease: bool) -> _Pooled:
    key = (alias, tenant.key)
    with _lock:
        entry = _leased(key, tenant, lease)
        if entry is not None:
            return entry
        building = _building.setdefault(key, threading.Lock())
    # Built outside the pool's lock: a slow build (a vault, a database) holds up only
    # its own tenant; the others' sends go on.
    with building:
        closing: list[DeliveryClient] = []
        try:
            with _lock:
                entry = _leased(key, tenant, lease)  # built meanwhile by another thread
                if entry is not None:
                    return entry
            client = tenant.build()
            if not isinstance(client, DeliveryClient):
                raise ConfigurationError(
                    "Tenant.build", f"must return a DeliveryClient, not {type(client).__name__}"
                )
            with _lock:
                old = _clients.pop(key, None)
                if old is not None:
                    _retire(old, closing)
                entry = _clients[key] = _Pooled(tenant.version, client, leases=int(lease))
                while len(_clients) > max_clients:
                    _retire(_clients.popitem(last=False)[1], closing)
                return entry
        finally:
            with _lock:
                if _building.get(key) is building:
                    del _building[key]
            for retired in closing:  # outside the lock
                retired.close()


def client_for(
    alias: str, tenant: Tenant, max_clients: int = DEFAULT_MAX_CLIENTS
) -> DeliveryClient:
    """The pooled client of `tenant` for mailer `alias`, built (or rebuilt) when needed.

    It may be closed as soon as another thread replaces or evicts it; a send holds it
    with `leased_client` instead.
    """
    return _acquire(alias, tenant, max_clients, lease=False).client


@contextlib.contextmanager
def leased_client(
    alias: str, tenant: Tenant, max_clients: int = DEFAULT_MAX_CLIENTS
) -> Iterator[DeliveryClient]:
    """`client_for`, kept open until the block ends even if it is replaced meanwhile."""
    entry = _acquire(alias, tenant, max_clients, lease=True)
    try:
        yield entry.client
    finally:
        with _lock:
            entry.leases -= 1
            close = entry.retired and entry.leases == 0
        if close:
            entry.client.close()


def close_clients() -> None:
    """Close every pooled client (at shutdown, or between tests)."""
    with _lock:
        clients = [entry.client for entry in _clients.values()]
        _clients.clear()
    for client in clients:
        client.close()
