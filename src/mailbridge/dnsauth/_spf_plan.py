"""What a tenant must publish so that the platform may send with their address."""

from __future__ import annotations

import enum
import re
import time

import attrs
import dns.exception
import dns.resolver

__all__ = ["SpfPlan", "SpfPlanStatus", "plan_include"]

MAX_DNS_TERMS = 10
_LOOKUP_TERM = re.compile(r"^[-+~?]?(include|a|mx|ptr|exists)(?=$|[:/])", re.IGNORECASE)
_INCLUDE = re.compile(r"^[-+~?]?include:(.+)$", re.IGNORECASE)
_REDIRECT = re.compile(r"^redirect=(.+)$", re.IGNORECASE)
_MAX_DEPTH = 10
MAX_QUERIES = 40  # records fetched to count lookups, in all
DEFAULT_TIMEOUT = 20.0  # seconds for all of a plan's DNS queries
_NOT_VISIBLE_OR_SP = re.compile(r"[^\x20-\x7e]")


class SpfPlanStatus(enum.StrEnum):
    """What the tenant has to do."""

    NOTHING_TO_DO = "nothing_to_do"  # the record already includes the platform
    CREATE = "create"  # no SPF record yet: publish `new_record`
    UPDATE = "update"  # replace the record with `new_record`
    FIX_FIRST = "fix_first"  # the record has a problem that must be solved first
    DNS_ERROR = "dns_error"  # the record could not be read; try again later


@attrs.frozen
class SpfPlan:
    """The tenant's SPF record now, what to publish instead, and why.

    `new_record` is the exact TXT text to publish (for CREATE and UPDATE);
    `problems` explains FIX_FIRST (and warnings otherwise); `lookups` is the
    number of DNS-lookup terms the record would need after the change.
    """

    domain: str
    status: SpfPlanStatus
    current_record: str | None = None
    new_record: str | None = None
    problems: tuple[str, ...] = ()
    lookups: int = 0

    @property
    def instructions(self) -> str:
        """What to tell the tenant, in one paragraph."""
        if self.status == SpfPlanStatus.NOTHING_TO_DO:
            return f"The SPF record of {self.domain} already authorises sending."
        if self.status in (SpfPlanStatus.CREATE, SpfPlanStatus.UPDATE):
            verb = "Add" if self.status == SpfPlanStatus.CREATE else "Replace the SPF record with"
            return (
                f"{verb} this TXT record for {self.domain}: {self.new_record}"
                " (DNS changes can take up to a few hours to be visible)."
            )
        return " ".join(self.problems)


def _spf_records(domain: str, resolver: dns.resolver.Resolver, deadline: float) -> list[str]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise dns.exception.Timeout  # the plan's time is up
    try:
        answer = resolver.resolve(
            domain,
            "TXT",
            raise_on_no_answer=False,
            search=False,
            lifetime=min(resolver.lifetime, remaining),
        )
    except dns.resolver.NXDOMAIN:
        return []
    records = []
    for rdata in answer.rrset or ():
        text = b"".join(rdata.strings).decode("utf-8", "replace")
        if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 "):
            records.append(text)
    return records


def _count_lookups(
    record: str,
    resolver: dns.resolver.Resolver,
    deadline: float,
    *,
    depth: int = 0,
    seen: frozenset[str] = frozenset(),
    budget: list[int] | None = None,
) -> int:
    """DNS-lookup terms of `record`, following include and redirect targets (no macros).

    At most `MAX_QUERIES` records are fetched in all, however the includes fan out.
    """
    budget = budget if budget is not None else [MAX_QUERIES]
    total = 0
    for term in record.split()[1:]:
        include = _INCLUDE.match(term)
        redirect = _REDIRECT.match(term)
        if not (_LOOKUP_TERM.match(term) or redirect):
            continue
        total += 1
        target_match = include or redirect
        if target_match is None or depth >= _MAX_DEPTH or budget[0] <= 0:
            continue
        target = target_match.group(1).rstrip(".").lower()
        if "%" in target or target in seen:
            continue
        budget[0] -= 1
        records = _spf_records(target, resolver, deadline)
        if len(records) == 1:
            total += _count_lookups(
                records[0], resolver, deadline, depth=depth + 1, seen=seen | {target}, budget=budget
            )
    return total


def plan_include(
    domain: str,
    include: str,
    *,
    resolver: dns.resolver.Resolver | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> SpfPlan:
    """Read `domain`'s SPF record and say what to publish so that it includes `include`.

    The include is inserted right after `v=spf1`, everything else is kept. All
    DNS queries together take at most `timeout` seconds (else `DNS_ERROR`).
    """
    resolver = resolver or dns.resolver.Resolver()
    deadline = time.monotonic() + timeout
    domain = domain.rstrip(".").lower()
    include = include.rstrip(".").lower()
    term = f"include:{include}"
    try:
        records = _spf_records(domain, resolver, deadline)
        added = _count_lookups(f"v=spf1 {term}", resolver, deadline)
        if not records:
            record = f"v=spf1 {term} ~all"
            return SpfPlan(domain, SpfPlanStatus.CREATE, None, record, lookups=added)
        if len(records) > 1:
            return SpfPlan(
                domain,
                SpfPlanStatus.FIX_FIRST,
                records[0],
                problems=(
                    f"{domain} publishes {len(records)} SPF records; receivers then ignore all "
                    "of them. Merge them into one record first.",
                ),
            )
        current = records[0]
        bad = _NOT_VISIBLE_OR_SP.search(current)
        if bad:
            problem = (
                f"The SPF record of {domain} contains {bad.group()!r}: SPF records may hold only "
                "printable ASCII characters, with terms separated by spaces (RFC 7208), so "
                "receivers reject this one. Retype it first."
            )
            return SpfPlan(domain, SpfPlanStatus.FIX_FIRST, current, problems=(problem,))
        terms = current.split()
        lookups = _count_lookups(current, resolver, deadline)
        before_all = []
        for t in terms[1:]:
            if t.lower().lstrip("+-~?") == "all":
                break  # terms after "all" are never evaluated
            before_all.append(t)
        if any(_INCLUDE.match(t) and t.lstrip("+").lower() == term for t in before_all):
            return SpfPlan(domain, SpfPlanStatus.NOTHING_TO_DO, current, lookups=lookups)
    except dns.exception.DNSException as exc:
        return SpfPlan(
            domain,
            SpfPlanStatus.DNS_ERROR,
            problems=(f"The SPF record of {domain} could not be read ({exc}); try again later.",),
        )
    problems = []
    if any(t.lower() in ("+all", "all") for t in terms[1:]):
        problems.append(
            f"The SPF record of {domain} ends in '+all', which lets anyone send as {domain}. "
            "Replace it with '~all' or '-all' first."
        )
    if lookups + added > MAX_DNS_TERMS:
        problems.append(
            f"With the include, the record of {domain} would need {lookups + added} DNS "
            f"lookups; SPF allows {MAX_DNS_TERMS}. Remove includes that are no longer used "
            "or replace some by ip4:/ip6: ranges."
        )
    if problems:
        return SpfPlan(
            domain,
            SpfPlanStatus.FIX_FIRST,
            current,
            problems=tuple(problems),
            lookups=lookups + added,
        )
    new_record = " ".join([terms[0], term, *terms[1:]])
    return SpfPlan(domain, SpfPlanStatus.UPDATE, current, new_record, lookups=lookups + added)
