"""Which server names from documents and DNS may be used, and where they lead.

Autoconfig documents, SRV targets and guessed names come from the internet.
A name must be a real DNS name or a plain IP literal (dotted quad, IPv6), never
one of the numeric forms that `getaddrinfo` also reads as an address
(``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``127.1``); and unless the
caller allows it, it must not lead to a loopback, private, link-local or other
non-global address (IPv4 addresses embedded in IPv6 ones included). The
addresses are resolved once; callers connect to an address that was checked.

Names are always resolved with dnspython, within one time-out for A and AAAA
together: with no resolver given, one configured from the system's
``resolv.conf``. `getaddrinfo` is never used, because it cannot be interrupted
(so ``/etc/hosts`` is not read; ``localhost`` names are loopback by RFC 6761).
"""

from __future__ import annotations

import ipaddress
import re
import time

import dns.exception
import dns.resolver

__all__ = [
    "checked_addresses",
    "host_problem",
    "is_internal",
    "resolve_host",
    "system_resolver",
]

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)
# What inet_aton (and so getaddrinfo) accepts as one part of an IPv4 address.
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


def system_resolver() -> dns.resolver.Resolver | None:
    """dnspython's resolver configured from the system (cached), or None when there is none."""
    try:
        return dns.resolver.get_default_resolver()
    except dns.exception.DNSException:  # no usable resolv.conf
        return None


def resolve_host(host: str, resolver: dns.resolver.Resolver | None, timeout: float) -> list[str]:
    """IP addresses of `host` (A, then AAAA) within `timeout` seconds for both together.

    Through `resolver`, or when None a resolver configured from the system's
    ``resolv.conf`` (no addresses when there is none); never more than the
    resolver's own `lifetime` per query.
    """
    if _literal(host) is not None:
        return [host]
    deadline = time.monotonic() + timeout
    resolver = resolver or system_resolver()
    if resolver is None:
        return []
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        left = min(deadline - time.monotonic(), resolver.lifetime)
        if left <= 0:
            break
        try:
            answer = resolver.resolve(
                host, rdtype, lifetime=left, raise_on_no_answer=False, search=False
            )
        except dns.exception.DNSException:
            continue
        addresses.extend(rdata.address for rdata in answer.rrset or ())
        if addresses:  # IPv4 found: no need to wait for AAAA as well
            break
    return addresses


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)  # strict: only dotted quads and IPv6
    except ValueError:
        return None


def host_problem(host: str) -> str | None:
    """Why `host` is not usable as a server name, or None when it is a name or IP literal."""
    if _literal(host) is not None:
        return None
    name = host[:-1] if host.endswith(".") else host
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return f"{host!r} is not a valid host name"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is not a valid host name"
    if all(_NUMBER.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return f"{host!r} is a numeric address form, not a host name"
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 IPv4-compatible (deprecated)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to: mapped, 6to4, NAT64 or IPv4-compatible."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_internal(address: str) -> bool:
    """True for loopback, private, link-local, shared, reserved or multicast addresses.

    An IPv6 address that carries an IPv4 address (mapped, 6to4, NAT64,
    IPv4-compatible) is internal when either of them is.
    """
    ip = ipaddress.ip_address(address)
    if not ip.is_global or ip.is_multicast:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return not embedded.is_global or embedded.is_multicast
    return False


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")  # RFC 6761 6.3


def checked_addresses(
    host: str,
    resolver: dns.resolver.Resolver | None,
    timeout: float,
    *,
    allow_private: bool,
) -> tuple[list[str], str | None]:
    """The addresses of `host` and None, or no addresses and the reason it is refused.

    An empty list with None means the name did not resolve. Names under
    ``localhost`` are loopback whatever DNS says (RFC 6761).
    """
    problem = host_problem(host)
    if problem is not None:
        return [], problem
    addresses = ["127.0.0.1"] if _is_localhost(host) else resolve_host(host, resolver, timeout)
    if not allow_private:
        internal = [a for a in addresses if is_internal(a)]
        if internal:
            return [], f"{host} leads to an internal address ({internal[0]})"
    return addresses, None
