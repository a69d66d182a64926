"""DMARC (RFC 7489): a domain's policy, and whether a message will align with it."""

from __future__ import annotations

import re

import attrs
import dns.exception
import dns.name
import dns.resolver

from .._psl import organizational_domain
from ..errors import ConfigurationError, DnsLookupError

__all__ = [
    "DmarcAlignment",
    "DmarcPolicy",
    "dmarc_alignment",
    "lookup_dmarc",
    "organizational_domain",
]


@attrs.frozen
class DmarcPolicy:
    """A published DMARC policy: where it was found and what it asks for."""

    domain: str
    policy: str  # none, quarantine or reject, for the domain the message is from
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    record: str = ""

    @property
    def enforced(self) -> bool:
        """True when failing messages are quarantined or rejected."""
        return self.policy in ("quarantine", "reject") and self.pct > 0


@attrs.frozen
class DmarcAlignment:
    """Whether a message will pass DMARC, and what happens to it when it does not."""

    aligned: bool
    reason: str
    policy: DmarcPolicy | None = None

    @property
    def at_risk(self) -> bool:
        """True when the message will not align and the policy quarantines or rejects."""
        return not self.aligned and self.policy is not None and self.policy.enforced


_NOT_A_NAME = re.compile(r"[\x00-\x20\x7f\[\]@\\]")  # spaces, controls, literals, addresses


def _checked_domain(domain: str) -> str:
    """`domain` lower-cased without its final dot; ConfigurationError when it is no DNS name."""
    name = domain.rstrip(".").lower()
    labels = name.split(".")
    problem = None
    if _NOT_A_NAME.search(name):
        problem = "contains spaces, control characters or other characters no name has"
    elif not all(0 < len(label) <= 63 for label in labels) or len(name) > 253:
        problem = "needs labels of 1 to 63 characters and at most 253 characters in all"
    else:
        try:
            dns.name.from_text(f"_dmarc.{name}")
        except dns.exception.DNSException as exc:  # too long with _dmarc., bad IDNA, ...
            problem = str(exc) or type(exc).__name__
    if problem is not None:
        raise ConfigurationError("domain", f"{domain[:80]!r} is not a domain name: {problem}")
    return name


def _record(name: str, resolver: dns.resolver.Resolver) -> str | None:
    query = f"_dmarc.{name}"
    try:
        answer = resolver.resolve(query, "TXT", raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.exception.Timeout:
        raise DnsLookupError(query, "no DNS server answered in time") from None
    except dns.exception.DNSException as exc:  # SERVFAIL, no nameservers, ...
        raise DnsLookupError(query, str(exc) or type(exc).__name__) from None
    records = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset or ()]
    records = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1;")]
    return records[0] if len(records) == 1 else None  # RFC 7489 6.6.3: exactly one


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            tags[key.strip().lower()] = value.strip()
    return tags


def lookup_dmarc(
    domain: str, *, resolver: dns.resolver.Resolver | None = None
) -> DmarcPolicy | None:
    """The DMARC policy that applies to mail from `domain`, or None when there is none.

    Looks at `_dmarc.<domain>`, then at the organisational domain (whose `sp=`
    applies to subdomains). A DNS failure (time-out, SERVFAIL) raises
    `DnsLookupError`; a `domain` that is no DNS name raises `ConfigurationError`.
    """
    domain = _checked_domain(domain)
    resolver = resolver or dns.resolver.Resolver()
    organizational = organizational_domain(domain)
    for name in dict.fromkeys([domain, organizational]):
        record = _record(name, resolver)
        if record is None:
            continue
        tags = _tags(record)
        policy = tags.get("p", "none").lower()
        if name != domain:
            policy = tags.get("sp", policy).lower()
        if policy not in ("none", "quarantine", "reject"):
            policy = "none"
        try:
            pct = max(0, min(100, int(tags.get("pct", "100"))))
        except ValueError:
            pct = 100
        return DmarcPolicy(
            name,
            policy,
            tags.get("adkim", "r").lower(),
            tags.get("aspf", "r").lower(),
            pct,
            record,
        )
    return None


def _aligned(author_domain: str, other: str | None, mode: str) -> bool:
    if other is None:
        return False
    if mode == "s":
        return author_domain == other
    return organizational_domain(author_domain) == organizational_domain(other)


def dmarc_alignment(
    author_domain: str,
    *,
    spf_domain: str | None = None,
    spf_pass: bool = False,
    dkim_domain: str | None = None,
    dkim_pass: bool = False,
    resolver: dns.resolver.Resolver | None = None,
    policy: DmarcPolicy | None = None,
) -> DmarcAlignment:
    """Will a message From `author_domain` pass DMARC?

    It passes when SPF passed for an envelope domain aligned with the From
    domain, or DKIM passed for an aligned signing domain.
    """
    author_domain = author_domain.rstrip(".").lower()
    try:
        policy = policy or lookup_dmarc(author_domain, resolver=resolver)
    except (DnsLookupError, ConfigurationError) as exc:
        return DmarcAlignment(
            False, f"the DMARC policy of {author_domain} could not be read: {exc}"
        )
    aspf = policy.aspf if policy else "r"
    adkim = policy.adkim if policy else "r"
    if spf_pass and _aligned(author_domain, spf_domain, aspf):
        return DmarcAlignment(
            True, f"SPF passes for {spf_domain}, aligned with the From domain", policy
        )
    if dkim_pass and _aligned(author_domain, dkim_domain, adkim):
        return DmarcAlignment(
            True, f"DKIM passes for {dkim_domain}, aligned with the From domain", policy
        )
    reasons = []
    if not spf_pass:
        reasons.append("SPF does not pass")
    elif not _aligned(author_domain, spf_domain, aspf):
        reasons.append(f"the envelope domain {spf_domain} is not aligned with {author_domain}")
    reasons.append(
        "no aligned DKIM signature"
        if not dkim_pass
        else f"the DKIM domain {dkim_domain} is not aligned with {author_domain}"
    )
    effect = (
        f"; {policy.domain} asks receivers to {policy.policy} such mail"
        if policy and policy.enforced
        else ""
    )
    return DmarcAlignment(False, ", ".join(reasons) + effect, policy)
