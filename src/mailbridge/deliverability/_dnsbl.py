"""`check_blacklists()`: RFC 5782 DNSBL lookups that tell listings from errors.

Per list: the RFC 5782 self-test first (127.0.0.2 must be listed, 127.0.0.1
must not), then each address, reversed (IPv4 octets, IPv6 nibbles). Answers
outside 127.0.0.0/8 mean the resolver rewrites unknown names; answers in a
list's error range (Spamhaus 127.255.255.0/24) are errors. Lists are asked
concurrently; the whole check, host lookup included, ends within `timeout`.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import time
from collections.abc import Iterable, Sequence

import attrs
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ..diagnosis import dnsbl_failed, dnsbl_listed, dnsbl_refused, dnsbl_untrusted
from ..errors import (
    BlacklistError,
    BlacklistLookupFailed,
    BlacklistQueryRefused,
    BlacklistResolverUntrusted,
    BlacklistTimeout,
    ConfigurationError,
)
from ._lists import DEFAULT_BLACKLISTS, Blacklist, check_dqs_key
from ._report import BlacklistReport, ListResult, ListStatus

__all__ = ["BlacklistCheck", "check_blacklists"]

DEFAULT_TIMEOUT = 10.0
MAX_ADDRESSES = 8  # of a host name: more are not checked
MAX_REASON = 300  # characters of a list's TXT reason
MAX_WORKERS = 16
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def reverse_name(address: Address) -> str:
    """The RFC 5782 query label of `address`: reversed octets, or reversed IPv6 nibbles."""
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


class _Asker:
    """Asks the resolver within the check's deadline and maps failures to typed errors."""

    def __init__(self, resolver: dns.resolver.Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline

    def ask(self, name: str, rdtype: str, zone: str | None, what: str) -> list[object] | None:
        """The answer's records ([] for no data), None for NXDOMAIN."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(zone, what)
        lifetime = min(remaining, self.resolver.lifetime)
        # dnspython's errors name the query, which holds a DQS key: the typed error is
        # raised after the except block, so that not even its __context__ keeps them.
        problem: str | None = None
        try:
            answer = self.resolver.resolve(
                dns.name.from_text(name),
                rdtype,
                lifetime=lifetime,
                raise_on_no_answer=False,
                search=False,
            )
        except dns.resolver.NXDOMAIN:
            return None
        except dns.exception.Timeout:
            problem = "timeout"
        except dns.exception.DNSException as exc:
            problem = (
                "no DNS server answered"
                if isinstance(exc, dns.resolver.NoNameservers)
                else (type(exc).__name__)
            )
        if problem == "timeout":
            raise _timeout(zone, what)
        if problem is not None:
            raise BlacklistLookupFailed(
                f"{what} failed: {problem}",
                zone=zone,
                diagnosis=dnsbl_failed(f"{what} failed ({problem})", timed_out=False),
                temporary=True,
            )
        return [] if answer.rrset is None else list(answer.rrset)


def _timeout(zone: str | None, what: str) -> BlacklistTimeout:
    return BlacklistTimeout(
        f"{what}: no answer in time",
        zone=zone,
        diagnosis=dnsbl_failed(what, timed_out=True),
        temporary=True,
    )


def _codes(blacklist: Blacklist, shown: str, records: list[object]) -> tuple[str, ...]:
    """The answers as text, checked: every one inside 127.0.0.0/8, none an error code."""
    codes = tuple(sorted({str(getattr(record, "address", record)) for record in records}))
    for code in codes:
        try:
            inside = ipaddress.IPv4Address(code) in _LOOPBACK
        except ValueError:
            inside = False
        if not inside:
            raise BlacklistResolverUntrusted(
                f"{blacklist.name} answered {code}, outside 127.0.0.0/8",
                zone=shown,
                diagnosis=dnsbl_untrusted(blacklist.name, "outside"),
            )
    errors = tuple(code for code in codes if blacklist.is_error(code))
    if errors:
        raise BlacklistQueryRefused(
            f"{blacklist.name} answered the error code {', '.join(errors)} (not a listing)",
            zone=shown,
            diagnosis=dnsbl_refused(blacklist.name, errors),
            codes=errors,
        )
    return codes


def _reason(asker: _Asker, name: str) -> str | None:
    """The list's TXT explanation, if it gives one in time; plain, printable, short."""
    try:
        records = asker.ask(name, "TXT", None, "the reason")
    except BlacklistError:
        return None
    texts = [
        b"".join(getattr(record, "strings", ())).decode("utf-8", "replace")
        for record in records or ()
    ]
    text = _CONTROL.sub(" ", " ".join(texts)).strip()
    return (text[: MAX_REASON - 3] + "...") if len(text) > MAX_REASON else (text or None)


def _self_test(asker: _Asker, blacklist: Blacklist, zone: str, shown: str) -> None:
    """RFC 5782 section 5: 127.0.0.2 listed and 127.0.0.1 not, or the list is not usable."""
    what = f"the self-test of {blacklist.name}"
    listed = asker.ask(f"2.0.0.127.{zone}.", "A", shown, what)
    if not listed or not _codes(blacklist, shown, listed):
        raise BlacklistResolverUntrusted(
            f"{blacklist.name} does not list its test address 127.0.0.2",
            zone=shown,
            diagnosis=dnsbl_untrusted(blacklist.name, "test_missing"),
        )
    clean = asker.ask(f"1.0.0.127.{zone}.", "A", shown, what)
    if clean and _codes(blacklist, shown, clean):
        raise BlacklistResolverUntrusted(
            f"{blacklist.name} lists the test address 127.0.0.1",
            zone=shown,
            diagnosis=dnsbl_untrusted(blacklist.name, "lists_everything"),
        )


def _check_list(
    asker: _Asker, blacklist: Blacklist, addresses: Sequence[Address], dqs_key: str | None
) -> list[ListResult]:
    """One list's verdicts on every address: the self-test first, then each address."""
    zone, shown = blacklist.query_zone(dqs_key), blacklist.shown_zone(dqs_key)
    started = time.monotonic()
    covered = [a for a in addresses if blacklist.ipv6 or a.version == 4]
    results = [
        ListResult(str(a), blacklist.name, shown, ListStatus.SKIPPED)
        for a in addresses
        if a not in covered
    ]
    try:
        _self_test(asker, blacklist, zone, shown)
    except BlacklistError as error:
        return [_failed(a, blacklist, shown, error, started) for a in covered] + results
    for address in covered:
        name = f"{reverse_name(address)}.{zone}."
        began = time.monotonic()
        try:
            records = asker.ask(name, "A", shown, f"the {blacklist.name} lookup of {address}")
            codes = _codes(blacklist, shown, records) if records else ()
        except BlacklistError as error:
            results.append(_failed(address, blacklist, shown, error, began))
            continue
        if not codes:
            seconds = time.monotonic() - began
            results.append(
                ListResult(str(address), blacklist.name, shown, ListStatus.CLEAN, seconds=seconds)
            )
            continue
        meanings = tuple(blacklist.codes.get(code, f"code {code}") for code in codes)
        reason = _reason(asker, name)
        results.append(
            ListResult(
                str(address),
                blacklist.name,
                shown,
                ListStatus.LISTED,
                codes=codes,
                meanings=meanings,
                reason=reason,
                diagnosis=dnsbl_listed(
                    blacklist.name, str(address), meanings, reason, blacklist.removal
                ),
                seconds=time.monotonic() - began,
            )
        )
    return results


def _failed(
    address: Address, blacklist: Blacklist, shown: str, error: BlacklistError, started: float
) -> ListResult:
    return ListResult(
        str(address),
        blacklist.name,
        shown,
        ListStatus.ERROR,
        codes=error.codes if isinstance(error, BlacklistQueryRefused) else (),
        error=error,
        diagnosis=error.diagnosis,
        seconds=time.monotonic() - started,
    )


def _parse_target(target: str) -> Address | str:
    """An IP address, or a checked host name (ASCII, A-labels)."""
    if not isinstance(target, str):
        raise ConfigurationError("ip_or_host", "must be a string (an IP address or host name)")
    text = target.strip().rstrip(".")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        mapped = getattr(address, "ipv4_mapped", None)
        return mapped if mapped is not None else address
    try:
        host = dns.name.from_unicode(text).to_text(omit_final_dot=True) if text else ""
    except (dns.exception.DNSException, UnicodeError):
        host = ""
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ConfigurationError("ip_or_host", f"not an IP address or host name: {target!r}")
    if labels[-1].isdigit():
        raise ConfigurationError("ip_or_host", f"not an IP address or host name: {target!r}")
    return host


def _addresses_of(asker: _Asker, host: str) -> list[Address]:
    """The host's IPv4 and IPv6 addresses (at most MAX_ADDRESSES), or a typed error."""
    found: list[Address] = []
    for rdtype in ("A", "AAAA"):
        records = asker.ask(f"{host}.", rdtype, None, f"the {rdtype} lookup of {host}")
        for record in records or ():
            address = ipaddress.ip_address(str(getattr(record, "address", "")))
            if address not in found:
                found.append(address)
    if not found:
        raise BlacklistLookupFailed(
            f"{host} has no IP address to check",
            zone=None,
            diagnosis=dnsbl_failed(
                f"The server name {host} has no address", timed_out=False, host_missing=True
            ),
        )
    found.sort(key=lambda address: (address.version, int(address)))
    return found[:MAX_ADDRESSES]


def _as_tuple(lists: Iterable[Blacklist]) -> tuple[Blacklist, ...]:
    return tuple(lists)


@attrs.frozen
class BlacklistCheck:
    """How to check blacklists: for `DeliveryClient.test_connection(blacklists=...)`.

    The arguments of `check_blacklists()`; `dqs_key` is a secret and never shown.
    """

    resolver: dns.resolver.Resolver | None = attrs.field(default=None, repr=False)
    lists: tuple[Blacklist, ...] = attrs.field(default=DEFAULT_BLACKLISTS, converter=_as_tuple)
    dqs_key: str | None = attrs.field(default=None, repr=False, converter=check_dqs_key)
    timeout: float = DEFAULT_TIMEOUT

    def run(self, targets: Iterable[str]) -> BlacklistReport:
        """Check every address of `targets` (IP addresses or host names) in one pass."""
        return _check(list(targets), self)


def check_blacklists(
    ip_or_host: str,
    *,
    resolver: dns.resolver.Resolver | None = None,
    lists: Iterable[Blacklist] = DEFAULT_BLACKLISTS,
    dqs_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> BlacklistReport:
    """Is `ip_or_host` on a blacklist? One `ListResult` per address and list.

    A host name is resolved (A and AAAA, at most 8 addresses) and each address
    checked. Each list is self-tested first (RFC 5782); a list that fails it, an
    error code (Spamhaus 127.255.255.x: the resolver is blocked) or an answer
    outside 127.0.0.0/8 gives an `error` result with advice, never a listing.
    `dqs_key` sends the Spamhaus queries to the Data Query Service. Lists are
    asked concurrently and the whole check ends within `timeout` seconds.
    Raises `ConfigurationError` for bad arguments and a `BlacklistError` when the
    host name cannot be resolved.
    """
    check = BlacklistCheck(resolver=resolver, lists=tuple(lists), dqs_key=dqs_key, timeout=timeout)
    return _check([ip_or_host], check)


def _system_resolver() -> dns.resolver.Resolver:
    try:
        return dns.resolver.Resolver()
    except dns.exception.DNSException as exc:  # no /etc/resolv.conf, no name server in it
        raise ConfigurationError("resolver", f"no system DNS resolver to use ({exc})") from None


def _check(targets: list[str], check: BlacklistCheck) -> BlacklistReport:
    if not (0 < check.timeout <= 600):  # also refuses NaN
        raise ConfigurationError("timeout", "must be more than 0 and at most 600 seconds")
    if not targets:
        raise ConfigurationError("ip_or_host", "nothing to check")
    if not check.lists or not all(isinstance(item, Blacklist) for item in check.lists):
        raise ConfigurationError("lists", "must be one or more Blacklist objects")
    parsed = [_parse_target(target) for target in targets]
    started = time.monotonic()
    asker = _Asker(check.resolver or _system_resolver(), started + check.timeout)
    addresses: list[Address] = []
    for item in parsed:
        for address in [item] if not isinstance(item, str) else _addresses_of(asker, item):
            if address not in addresses:
                addresses.append(address)
    results: list[ListResult] = []
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(len(check.lists), MAX_WORKERS), thread_name_prefix="mailbridge-dnsbl"
    )
    try:
        futures = {
            executor.submit(_check_list, asker, blacklist, addresses, check.dqs_key): blacklist
            for blacklist in check.lists
        }
        # Every query's lifetime ends at the deadline; the margin covers the threads' exit.
        remaining = asker.deadline - time.monotonic() + 0.5
        concurrent.futures.wait(futures, timeout=max(remaining, 0))
        for future, blacklist in futures.items():
            if future.done() and not future.cancelled():
                results += future.result()
            else:
                shown = blacklist.shown_zone(check.dqs_key)
                error = _timeout(shown, f"the {blacklist.name} check")
                results += [_failed(a, blacklist, shown, error, started) for a in addresses]
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    order = {address: index for index, address in enumerate(addresses)}
    results.sort(key=lambda r: order[ipaddress.ip_address(r.address)])
    return BlacklistReport(
        target=", ".join(str(t).strip() for t in targets),
        addresses=tuple(str(a) for a in addresses),
        results=tuple(results),
        seconds=time.monotonic() - started,
    )
