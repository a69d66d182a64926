"""SPF: RFC 7208 check_host() over dnspython.

`check_host(ip, domain, sender)` answers whether `ip` may send mail for
`domain`, with the RFC's seven results. Every DNS query is bounded: at most
10 terms that cause lookups, 2 void lookups, 10 MX and 10 PTR names per
term; DNS time-outs and server failures are `temperror`. The overall
deadline covers the whole evaluation, CPU included: parsing, macro expansion
and every loop look at it, and the check ends with `temperror` when it passes.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
import time
from typing import Any

import attrs
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from ..errors import ConfigurationError
from ._spf_macros import (
    MAX_EXPLANATION,
    MacroContext,
    MacroError,
    MacroString,
    MacroTimeout,
    expand,
    expand_domain,
)
from ._spf_syntax import Directive, SpfSyntaxError, cidr_lengths, parse_terms

__all__ = ["SpfResult", "SpfVerdict", "check_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DNS_TERMS = 10  # RFC 7208 4.6.4
MAX_VOID_LOOKUPS = 2
MAX_MX_OR_PTR = 10
DEFAULT_TIMEOUT = 20.0  # "at least 20 seconds" for the whole check (4.6.4)
MAX_CACHE_TTL = 3600  # never trust a verdict longer than an hour
NEGATIVE_CACHE_TTL = 60  # "no record yet" is rechecked soon

_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
# A record is 7-bit ASCII (RFC 7208 3.1) whose terms are separated by SP only (4.6.1).
_NOT_VISIBLE_OR_SP = re.compile(r"[^\x20-\x7e]")
_TOO_LONG = "the SPF check took too long"
_NOT_A_NAME = re.compile(r"[\x00-\x20\x7f\[\]@\\]")  # "[192.0.2.1]", "a b.example", ...


class SpfVerdict(enum.StrEnum):
    """The seven results of RFC 7208 section 2.6."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


@attrs.frozen
class SpfResult:
    """The outcome of `check_host()`.

    `result` is the verdict; `explanation` the domain's `exp=` text for a
    fail; `mechanism` the term that decided; `reason` says why in plain words;
    `lookups` counts the terms that caused DNS lookups.
    """

    result: SpfVerdict
    domain: str
    reason: str = ""
    mechanism: str | None = None
    explanation: str | None = None
    record: str | None = None
    lookups: int = 0
    ttl: int = 0  # seconds the answer may be cached: the shortest TTL of the records used


class _Stop(Exception):  # ends the evaluation with a verdict (control flow)
    def __init__(self, verdict: SpfVerdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


@attrs.define
class _State:
    resolver: dns.resolver.Resolver
    deadline: float
    ip: IPAddress
    sender: str
    helo: str
    terms: int = 0
    voids: int = 0
    ttl: int = MAX_CACHE_TTL

    def count_term(self, term: str) -> None:
        self.terms += 1
        if self.terms > MAX_DNS_TERMS:
            raise _Stop(SpfVerdict.PERMERROR, f"more than {MAX_DNS_TERMS} DNS lookups ({term})")

    def void(self, name: str) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise _Stop(
                SpfVerdict.PERMERROR, f"more than {MAX_VOID_LOOKUPS} void DNS lookups ({name})"
            )

    def check_deadline(self) -> None:
        """Stop with temperror once the deadline has passed."""
        if time.monotonic() >= self.deadline:
            raise _Stop(SpfVerdict.TEMPERROR, _TOO_LONG)

    def query(self, name: str, rdtype: str, *, counts_void: bool = True) -> list[Any]:
        """Answer rdatas, [] for NXDOMAIN/NODATA (a void lookup); temperror on DNS failure."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Stop(SpfVerdict.TEMPERROR, _TOO_LONG)
        try:
            answer = self.resolver.resolve(
                name,
                rdtype,
                raise_on_no_answer=False,
                lifetime=min(self.resolver.lifetime, remaining),
                search=False,
            )
        except dns.resolver.NXDOMAIN:
            records: list[Any] = []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as exc:
            raise _Stop(
                SpfVerdict.TEMPERROR, f"DNS lookup of {name} {rdtype} failed: {exc}"
            ) from None
        except (
            dns.name.LabelTooLong,
            dns.name.NameTooLong,
            dns.name.EmptyLabel,
            dns.name.BadEscape,
            dns.exception.SyntaxError,
        ):
            records = []  # a name that cannot exist (e.g. after macro expansion): nothing there
        except dns.exception.DNSException as exc:
            raise _Stop(
                SpfVerdict.TEMPERROR, f"DNS lookup of {name} {rdtype} failed: {exc}"
            ) from None
        else:
            records = list(answer.rrset) if answer.rrset else []
            if answer.rrset is not None:
                self.ttl = min(self.ttl, answer.rrset.ttl)
        if not records and counts_void:
            self.void(name)
        return records


def _ip(value: str | IPAddress) -> IPAddress:
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else value
    except ValueError:
        problem = f"not an IPv4 or IPv6 address: {str(value)[:80]!r}"
        raise ConfigurationError("ip", problem) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _valid_domain(domain: str) -> bool:
    """RFC 7208 4.3: a multi-label name, labels of 1 to 63 characters, not a domain literal."""
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or len(domain) > 253 or _NOT_A_NAME.search(domain):
        return False
    return all(0 < len(label) <= 63 for label in labels)


def _in_network(ip: IPAddress, address: str, lengths: tuple[int, int]) -> bool:
    try:
        candidate = ipaddress.ip_address(str(address))
    except ValueError:
        return False
    if candidate.version != ip.version:
        return False
    prefix = lengths[0] if ip.version == 4 else lengths[1]
    network = ipaddress.ip_network(f"{candidate}/{prefix}", strict=False)
    return ip in network


def _address_type(ip: IPAddress) -> str:
    return "A" if ip.version == 4 else "AAAA"


def _validated_names(state: _State, target: str | None, *, counts_void: bool = True) -> list[str]:
    """Names from the PTR records of the IP that resolve back to it (RFC 7208 5.5)."""
    try:
        reverse = dns.reversename.from_address(str(state.ip)).to_text()
        names = [
            rdata.target.to_text() for rdata in state.query(reverse, "PTR", counts_void=counts_void)
        ]
    except _Stop as stop:
        if stop.verdict == SpfVerdict.TEMPERROR:
            return []  # a DNS error in the PTR lookup makes ptr not match
        raise
    validated = []
    for raw_name in names[:MAX_MX_OR_PTR]:
        name = raw_name.rstrip(".").lower()
        if target and not (name == target or name.endswith("." + target)):
            continue
        try:
            addresses = state.query(name, _address_type(state.ip), counts_void=False)
        except _Stop as stop:
            if stop.verdict == SpfVerdict.TEMPERROR:
                continue
            raise
        if any(_in_network(state.ip, a.address, (32, 128)) for a in addresses):
            validated.append(name)
    return validated


class _Evaluator:
    def __init__(self, state: _State) -> None:
        self.state = state
        self._p_names: dict[str, str] = {}

    def context(self, domain: str) -> MacroContext:
        state = self.state

        def validated_name() -> str:
            # %{p}: looked up once per domain and check, and (RFC 7208 4.6.4) not a "term",
            # so its lookups count neither as terms nor as void lookups.
            key = domain.lower()
            if key not in self._p_names:
                names = _validated_names(state, key, counts_void=False)
                names = names or _validated_names(state, None, counts_void=False)
                self._p_names[key] = names[0] if names else "unknown"
            return self._p_names[key]

        return MacroContext(state.ip, state.sender, domain, state.helo, "unknown", validated_name)

    def target(self, spec: MacroString | None, domain: str) -> str:
        """The name a term queries: its domain-spec expanded (RFC 7208 7.3), else <domain>."""
        if spec is None:
            return domain
        return expand_domain(spec, self.context(domain), deadline=self.state.deadline)

    def record(self, domain: str) -> str | None:
        """The one SPF record of `domain` (RFC 7208 4.5), None when there is none."""
        records = []
        for rdata in self.state.query(domain, "TXT", counts_void=False):
            joined = b"".join(rdata.strings)
            if joined[:6].lower() == b"v=spf1" and joined[6:7] in (b"", b" "):
                records.append(joined)
        if len(records) > 1:
            raise _Stop(SpfVerdict.PERMERROR, f"{domain} publishes {len(records)} SPF records")
        if not records:
            return None
        try:
            record = records[0].decode("ascii")
        except UnicodeDecodeError:
            raise _Stop(
                SpfVerdict.PERMERROR,
                f"the SPF record of {domain} holds bytes outside 7-bit ASCII (RFC 7208 3.1)",
            ) from None
        bad = _NOT_VISIBLE_OR_SP.search(record)
        if bad:
            raise _Stop(
                SpfVerdict.PERMERROR,
                f"the SPF record of {domain} holds {bad.group()!r}: terms are separated by "
                "spaces only (RFC 7208 4.6.1)",
            )
        return record

    def check(self, domain: str, depth: int = 0) -> SpfResult:
        if not _valid_domain(domain):
            return SpfResult(SpfVerdict.NONE, domain, f"{domain!r} is not a domain name")
        record = self.record(domain)
        if record is None:
            return SpfResult(SpfVerdict.NONE, domain, f"{domain} publishes no SPF record")
        try:  # every term checked before any is evaluated: a syntax error is permerror (4.6)
            parsed = parse_terms(
                record.split(" ")[1:],
                deadline=self.state.deadline,
                check_deadline=self.state.check_deadline,
            )
        except SpfSyntaxError as exc:
            raise _Stop(SpfVerdict.PERMERROR, str(exc)) from None
        directives, redirect, exp = parsed.directives, parsed.redirect, parsed.exp
        for directive in directives:
            self.state.check_deadline()
            text = directive.text
            if self.matches(directive, domain, depth):
                verdict = SpfVerdict(_QUALIFIERS[directive.qualifier or "+"])
                explanation = self.explain(exp, domain) if verdict == SpfVerdict.FAIL else None
                return SpfResult(
                    verdict, domain, f"matched {text}", text, explanation, record, self.state.terms
                )
        if redirect is not None and not any(d.name == "all" for d in directives):
            self.state.count_term("redirect")
            target = self.target(redirect, domain)
            result = self.check(target, depth + 1)
            if result.result == SpfVerdict.NONE:
                raise _Stop(SpfVerdict.PERMERROR, f"redirect to {target}, which has no SPF record")
            return result
        return SpfResult(
            SpfVerdict.NEUTRAL, domain, "no mechanism matched", None, None, record, self.state.terms
        )

    def matches(self, directive: Directive, domain: str, depth: int) -> bool:
        name, value, cidr, spec = directive.name, directive.value, directive.cidr, directive.spec
        state = self.state
        ip = state.ip
        if name == "all":
            return True
        if name in ("ip4", "ip6"):  # the CIDR length was checked with the syntax
            prefix = int(cidr[1:]) if cidr else (32 if name == "ip4" else 128)
            lengths = (prefix, 128) if name == "ip4" else (32, prefix)
            return _in_network(ip, value or "", lengths)
        state.count_term(name)
        if name == "include":
            target = self.target(spec, domain)
            result = self.check(target, depth + 1)
            if result.result in (SpfVerdict.PERMERROR, SpfVerdict.NONE):
                raise _Stop(SpfVerdict.PERMERROR, f"include:{target}: {result.reason}")
            return result.result == SpfVerdict.PASS
        if name == "exists":
            return bool(state.query(self.target(spec, domain), "A"))
        if name == "ptr":
            target = self.target(spec, domain).lower()
            return bool(_validated_names(state, target))
        lengths = cidr_lengths(cidr)  # valid: checked with the syntax
        target = self.target(spec, domain)
        if name == "a":
            return any(
                _in_network(ip, a.address, lengths) for a in state.query(target, _address_type(ip))
            )
        exchanges = state.query(target, "MX")  # name == "mx"
        if len(exchanges) > MAX_MX_OR_PTR:
            raise _Stop(SpfVerdict.PERMERROR, f"{target} has more than {MAX_MX_OR_PTR} MX records")
        for exchange in exchanges:
            host = exchange.exchange.to_text().rstrip(".")
            if host and any(
                _in_network(ip, a.address, lengths)
                for a in state.query(host, _address_type(ip), counts_void=False)
            ):
                return True
        return False

    def explain(self, exp: MacroString | None, domain: str) -> str | None:
        """The exp= text (RFC 7208 6.2); any problem with it means no explanation."""
        if exp is None:
            return None
        try:
            target = self.target(exp, domain)
            texts = self.state.query(target, "TXT", counts_void=False)
            if len(texts) != 1:
                return None
            raw = b"".join(texts[0].strings).decode("ascii")  # 7-bit ASCII only
            return expand(
                raw,
                self.context(domain),
                explanation=True,
                limit=MAX_EXPLANATION,
                deadline=self.state.deadline,
            )
        except (_Stop, MacroError, MacroTimeout, UnicodeDecodeError):
            return None


def check_host(
    ip: str | IPAddress,
    domain: str,
    sender: str,
    *,
    helo: str | None = None,
    resolver: dns.resolver.Resolver | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> SpfResult:
    """RFC 7208 check_host(): may `ip` send mail for `domain` with envelope `sender`?

    `sender` is the MAIL FROM address (a bare domain means postmaster@domain);
    `resolver` any `dns.resolver.Resolver` (the system's by default). An `ip`
    that is no IP address, or a `timeout` that is not a finite number of seconds
    greater than zero, raises `ConfigurationError`.
    """
    address = _ip(ip)
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError("timeout", "must be a finite number of seconds greater than 0")
    domain = domain.rstrip(".").lower()
    if "@" not in sender:
        sender = f"postmaster@{sender}"
    elif sender.startswith("@"):
        sender = "postmaster" + sender
    state = _State(
        resolver or dns.resolver.Resolver(),
        time.monotonic() + timeout,
        address,
        sender,
        helo or "unknown",
    )
    try:
        result = _Evaluator(state).check(domain)
    except _Stop as stop:
        result = SpfResult(stop.verdict, domain, stop.reason)
    except MacroTimeout:
        result = SpfResult(SpfVerdict.TEMPERROR, domain, _TOO_LONG)
    ttl = 0 if result.result == SpfVerdict.TEMPERROR else state.ttl
    if result.result == SpfVerdict.NONE:
        ttl = min(ttl, NEGATIVE_CACHE_TTL)  # a record may be published any minute
    return attrs.evolve(result, domain=domain, lookups=state.terms, ttl=ttl)
