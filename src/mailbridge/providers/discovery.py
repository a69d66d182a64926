"""Autodiscovery: from an address to ranked, explained SMTP and IMAP settings.

Sources run concurrently under one deadline: the provider registry (by domain),
MX records matched against the registry, the domain's autoconfig documents,
an ISPDB-style database (off by default), RFC 6186/8314 SRV records; guessing
by probing common host names runs only when all of them found nothing.
"""

from __future__ import annotations

import concurrent.futures
import queue
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import dns.exception
import dns.flags
import dns.resolver

from .._psl import registered_domain
from ..addresses import parse_mailbox
from ..errors import AutoconfigError
from ..settings import ImapSettings, Security, SmtpSettings
from ._hosts import checked_addresses
from ._probe import ProbeTarget, probe_endpoint
from .autoconfig import parse_autoconfig
from .fetch import Fetcher, HttpsFetcher
from .models import Provider
from .registry import ProviderRegistry

__all__ = [
    "Candidate",
    "DiscoveryCache",
    "DiscoveryProgress",
    "DiscoveryResult",
    "SourceReport",
    "discover",
]

DEFAULT_CACHE_TTL = 300.0  # for results that used no DNS record (the registry, HTTPS)
PROGRESS_INTERVAL = 1.0  # seconds between progress calls while sources are pending
DEADLINE_SLACK = 0.25  # an empty answer this close to the deadline counts as timed out

PRIORITY = {"registry": 0, "mx": 1, "autoconfig": 2, "ispdb": 3, "srv": 4, "guess": 5}
_SRV = (
    ("smtp", "_submissions._tcp", Security.IMPLICIT_TLS),
    ("smtp", "_submission._tcp", Security.STARTTLS),
    ("imap", "_imaps._tcp", Security.IMPLICIT_TLS),
    ("imap", "_imap._tcp", Security.STARTTLS),
)
GUESS_PORTS: dict[str, tuple[tuple[int, Security], ...]] = {
    "smtp": ((465, Security.IMPLICIT_TLS), (587, Security.STARTTLS), (25, Security.STARTTLS)),
    "imap": ((993, Security.IMPLICIT_TLS), (143, Security.STARTTLS)),
}


@attrs.frozen
class Candidate:
    """One way to reach the server, where it came from, and whether to trust it."""

    protocol: str  # "smtp" or "imap"
    host: str
    port: int
    security: Security
    username: str | None
    auth_methods: tuple[str, ...]
    source: str
    trusted: bool
    explanation: str
    provider_id: str | None = None  # set when the candidate comes from the registry

    @property
    def rank_key(self) -> tuple[int, int, int]:
        """Encrypted first, then by source priority, then implicit TLS before STARTTLS."""
        return (
            self.security == Security.NONE,
            PRIORITY.get(self.source, 9),
            self.security != Security.IMPLICIT_TLS,
        )

    def smtp_settings(self, password: str | None = None, **changes: Any) -> SmtpSettings:
        """`SmtpSettings` for this candidate (with the user name it found)."""
        username = self.username if password is not None else None
        return SmtpSettings(
            self.host, self.port, self.security, username=username, password=password, **changes
        )

    def imap_settings(self, password: str | None = None, **changes: Any) -> ImapSettings:
        """`ImapSettings` for this candidate."""
        username = self.username if password is not None else None
        return ImapSettings(
            self.host, self.port, self.security, username=username, password=password, **changes
        )


@attrs.frozen
class SourceReport:
    """What one source did: how many candidates, how long, what went wrong."""

    name: str
    found: int
    seconds: float
    error: str | None = None
    timed_out: bool = False  # no answer before the deadline (e.g. an unreachable resolver)


@attrs.frozen
class DiscoveryProgress:
    """Passed to `discover(progress=...)`: a source finished, or a reminder of who is pending."""

    finished: SourceReport | None
    pending: tuple[str, ...]
    elapsed: float


@attrs.frozen
class DiscoveryResult:
    """Ranked SMTP and IMAP candidates, the provider when known, and each source's report."""

    email: str
    smtp: tuple[Candidate, ...]
    imap: tuple[Candidate, ...]
    provider: Provider | None = None
    sources: tuple[SourceReport, ...] = ()

    def __str__(self) -> str:
        lines = [f"Settings for {self.email}:"]
        for label, candidates in (("SMTP", self.smtp), ("IMAP", self.imap)):
            for c in candidates:
                trust = "trusted" if c.trusted else "UNTRUSTED"
                lines.append(
                    f"  {label} {c.host}:{c.port} {c.security.value:<12} [{c.source}, "
                    f"{trust}] {c.explanation}"
                )
        if not (self.smtp or self.imap):
            lines.append("  nothing found")
        if self.timed_out:
            lines.append(f"  no answer in time from: {', '.join(self.timed_out)}")
        return "\n".join(lines)

    @property
    def timed_out(self) -> tuple[str, ...]:
        """The sources that did not answer before the deadline."""
        return tuple(s.name for s in self.sources if s.timed_out)


class DiscoveryCache:
    """Keeps discovery results per domain for as long as their DNS answers live.

    Pass the same cache to every `discover()` call; a result is reused until the
    shortest TTL of the DNS records it used (at most `max_ttl` seconds) has passed.
    """

    def __init__(self, max_ttl: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.max_ttl = max_ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, DiscoveryResult]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> DiscoveryResult | None:
        """The cached result for `key` while it is fresh."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self.clock() >= entry[0]:
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: str, result: DiscoveryResult, ttl: float) -> None:
        """Keep `result` for `ttl` seconds (capped at `max_ttl`)."""
        with self._lock:
            self._entries[key] = (self.clock() + min(ttl, self.max_ttl), result)


@attrs.frozen
class _Context:
    email: str
    domain: str
    registry: ProviderRegistry
    resolver: dns.resolver.Resolver | None
    fetcher: Fetcher
    timeout: float
    allow_http: bool
    ispdb_url: str | None
    tls_context: ssl.SSLContext
    guess_ports: dict[str, tuple[tuple[int, Security], ...]]
    allow_private: bool = False
    ttls: list[int] = attrs.field(factory=list)  # TTLs of the DNS answers used
    deadline: float = attrs.field(factory=lambda: time.monotonic() + 3600.0)

    def remaining(self) -> float:
        """Seconds left until the overall deadline (at least a sliver, for clean failures)."""
        return max(0.05, min(self.timeout, self.deadline - time.monotonic()))

    def acceptable(self, candidate: Candidate) -> bool:
        """False for a host that is no DNS name, or that leads to an internal address."""
        _, refused = checked_addresses(
            candidate.host, self.resolver, self.remaining(), allow_private=self.allow_private
        )
        return refused is None


def _from_provider(
    ctx: _Context,
    provider: Provider,
    source: str,
    why: str,
    *,
    mx_host: str | None = None,
    trusted: bool = True,
) -> list[Candidate]:
    found = []
    for protocol, endpoints in (("smtp", provider.smtp), ("imap", provider.imap)):
        for endpoint in endpoints:
            try:
                host = endpoint.host_for(ctx.email, mx_host=mx_host)
            except ValueError:
                continue
            found.append(
                Candidate(
                    protocol,
                    host,
                    endpoint.port,
                    endpoint.security,
                    endpoint.username_for(ctx.email),
                    tuple(provider.auth),
                    source,
                    trusted,
                    why,
                    provider.id,
                )
            )
    return found


def _registry(ctx: _Context) -> list[Candidate]:
    provider = ctx.registry.by_domain(ctx.domain)
    if provider is None:
        return []
    return _from_provider(
        ctx, provider, "registry", f"{provider.name}, from mailbridge's provider list"
    )


def _query(ctx: _Context, name: str, rdtype: str) -> tuple[list[Any], bool]:
    resolver = ctx.resolver or dns.resolver.Resolver()
    try:
        answer = resolver.resolve(
            name, rdtype, lifetime=ctx.remaining(), raise_on_no_answer=False, search=False
        )
    except dns.exception.Timeout:
        raise TimeoutError(f"no DNS answer for {name} {rdtype}") from None
    except dns.exception.DNSException:
        return [], False
    authenticated = bool(answer.response.flags & dns.flags.AD)
    if answer.rrset is not None:
        ctx.ttls.append(answer.rrset.ttl)
    return list(answer.rrset or ()), authenticated


def _autoconfig_at(
    ctx: _Context, urls: Sequence[str], source: str, *, found_via_trusted: bool = True
) -> list[Candidate]:
    for url in urls:
        body = ctx.fetcher.fetch(url, ctx.remaining())
        if body is None:
            continue
        try:
            parsed = parse_autoconfig(body, ctx.email)
        except AutoconfigError:
            continue
        trusted = url.startswith("https://") and found_via_trusted
        return [
            Candidate(
                c.protocol,
                c.host,
                c.port,
                c.security,
                c.username,
                tuple(c.auth_methods),
                source,
                trusted,
                f"autoconfig document at {url}",
            )
            for c in parsed
            if c.protocol in ("smtp", "imap")
        ]
    return []


def _autoconfig_urls(domain: str, ctx: _Context) -> list[str]:
    path = "mail/config-v1.1.xml?" + urllib.parse.urlencode({"emailaddress": ctx.email})
    urls = [
        f"https://autoconfig.{domain}/{path}",
        f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
    ]
    if ctx.allow_http:
        urls.append(f"http://autoconfig.{domain}/{path}")
    return urls


def _autoconfig(ctx: _Context) -> list[Candidate]:
    return _autoconfig_at(ctx, _autoconfig_urls(ctx.domain, ctx), "autoconfig")


def _ispdb(ctx: _Context) -> list[Candidate]:
    if not ctx.ispdb_url:
        return []
    return _autoconfig_at(ctx, [f"{ctx.ispdb_url.rstrip('/')}/{ctx.domain}"], "ispdb")


def _mx(ctx: _Context) -> list[Candidate]:
    records, authenticated = _query(ctx, ctx.domain, "MX")
    if not records:
        return []
    best = min(records, key=lambda r: r.preference)
    mx_host = best.exchange.to_text().rstrip(".").lower()
    provider = ctx.registry.by_mx(mx_host)
    if provider is not None:
        return _from_provider(
            ctx,
            provider,
            "mx",
            f"found via MX {mx_host} → {provider.name}",
            mx_host=mx_host,
            trusted=authenticated,
        )
    # The MX host's parent and its registered domain (by the Public Suffix List); never a
    # public suffix such as co.uk, co.id or com.de, nor a platform's suffix such as github.io.
    base = registered_domain(mx_host)
    if base is None:
        return []
    parents = [
        p
        for p in dict.fromkeys([mx_host.partition(".")[2], base])
        if p == base or p.endswith("." + base)
    ]
    urls = [url for parent in parents for url in _autoconfig_urls(parent, ctx)[:1]]
    # Found through an unauthenticated MX answer: HTTPS alone does not make it trusted.
    return _autoconfig_at(ctx, urls, "mx", found_via_trusted=authenticated)


def _srv(ctx: _Context) -> list[Candidate]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(_SRV)) as pool:
        futures = [pool.submit(_query, ctx, f"{entry[1]}.{ctx.domain}", "SRV") for entry in _SRV]
    if all(isinstance(f.exception(), TimeoutError) for f in futures):
        raise TimeoutError(f"no DNS answer for the SRV records of {ctx.domain}")
    answers = [([], False) if f.exception() else f.result() for f in futures]
    found = []
    for (protocol, service, security), (records, authenticated) in zip(_SRV, answers, strict=True):
        for record in sorted(records, key=lambda r: (r.priority, -r.weight)):
            target = record.target.to_text().rstrip(".").lower()
            if not target:  # "." : the service is decidedly not offered
                break
            inside = target == ctx.domain or target.endswith("." + ctx.domain)
            why = f"DNS SRV {service}.{ctx.domain} → {target}:{record.port}"
            found.append(
                Candidate(
                    protocol,
                    target,
                    record.port,
                    security,
                    ctx.email,
                    ("password",),
                    "srv",
                    authenticated and inside,
                    why if inside else why + " (outside the domain)",
                )
            )
    return found


def _guess(ctx: _Context) -> list[Candidate]:
    targets = []
    for protocol, prefixes in (("smtp", ("smtp.", "mail.", "")), ("imap", ("imap.", "mail."))):
        for prefix in prefixes:
            host = prefix + ctx.domain
            if ctx.deadline - time.monotonic() < 0.5:
                return []
            addresses, _ = checked_addresses(
                host, ctx.resolver, ctx.remaining(), allow_private=ctx.allow_private
            )
            if addresses:  # never knock on internal addresses unless allowed
                targets += [
                    ProbeTarget(protocol, host, addresses[0], port, security)
                    for port, security in ctx.guess_ports[protocol]
                ]
    if not targets:
        return []
    wait = min(ctx.remaining(), 5.0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        answers = list(pool.map(lambda t: probe_endpoint(t, ctx.tls_context, wait), targets))
    return [
        Candidate(
            t.protocol,
            t.host,
            t.port,
            t.security,
            ctx.email,
            ("password",),
            "guess",
            False,
            f"guessed: {t.host}:{t.port} answered with {t.security.value}",
        )
        for t, ok in zip(targets, answers, strict=True)
        if ok
    ]


_SOURCES: dict[str, Callable[[_Context], list[Candidate]]] = {
    "mx": _mx,
    "autoconfig": _autoconfig,
    "ispdb": _ispdb,
    "srv": _srv,
}


def _run(ctx: _Context, source: Callable[[_Context], list[Candidate]]) -> Any:
    """Run one source; its candidates, filtered by the host policy, or the exception."""
    try:
        return [c for c in source(ctx) if ctx.acceptable(c)]
    except Exception as exc:  # reported in the source's SourceReport, never raised
        return exc


def _gather(
    ctx: _Context, progress: Callable[[DiscoveryProgress], None] | None
) -> tuple[list[SourceReport], list[Candidate]]:
    """Run the internet sources in daemon threads until they finish or the deadline passes.

    Threads still running at the deadline are left behind: their DNS queries
    and fetches are bounded by the same deadline, so they end moments later.
    """
    results: queue.Queue[tuple[str, Any, float]] = queue.Queue()
    started = time.monotonic()
    sources = {n: s for n, s in _SOURCES.items() if n != "ispdb" or ctx.ispdb_url}
    for name, source in sources.items():

        def work(name: str = name, source: Callable[[_Context], list[Candidate]] = source) -> None:
            outcome = _run(ctx, source)
            results.put((name, outcome, time.monotonic() - started))

        threading.Thread(target=work, name=f"mailbridge-discover-{name}", daemon=True).start()
    pending = dict.fromkeys(sources)
    reports: list[SourceReport] = []
    candidates: list[Candidate] = []
    while pending:
        left = ctx.deadline - time.monotonic()
        if left <= 0:
            break
        try:
            name, outcome, seconds = results.get(timeout=min(left, PROGRESS_INTERVAL))
        except queue.Empty:
            if progress is not None and time.monotonic() < ctx.deadline:
                progress(DiscoveryProgress(None, tuple(pending), time.monotonic() - started))
            continue
        del pending[name]
        if isinstance(outcome, TimeoutError):
            report = SourceReport(name, 0, seconds, str(outcome), timed_out=True)
        elif isinstance(outcome, Exception):
            report = SourceReport(name, 0, seconds, f"{type(outcome).__name__}: {outcome}")
        else:
            # An empty answer that took the whole time budget is a time-out too.
            late = not outcome and seconds >= ctx.timeout - DEADLINE_SLACK
            report = SourceReport(name, len(outcome), seconds, timed_out=late)
            candidates += outcome
        reports.append(report)
        if progress is not None:
            progress(DiscoveryProgress(report, tuple(pending), time.monotonic() - started))
        if any(c.source == "mx" and c.trusted for c in candidates):
            break  # a DNSSEC-authenticated MX match: the best answer the rest could give
    for name in pending:
        report = SourceReport(
            name, 0, time.monotonic() - started, "no answer in time", timed_out=True
        )
        reports.append(report)
        if progress is not None:
            progress(DiscoveryProgress(report, (), report.seconds))
    return reports, candidates


def discover(
    email: str,
    *,
    resolver: dns.resolver.Resolver | None = None,
    fetcher: Fetcher | None = None,
    registry: ProviderRegistry | None = None,
    timeout: float = 10.0,
    allow_http: bool = False,
    ispdb_url: str | None = None,
    guess: bool = True,
    guess_ports: dict[str, tuple[tuple[int, Security], ...]] | None = None,
    tls_context: ssl.SSLContext | None = None,
    cache: DiscoveryCache | None = None,
    allow_private: bool = False,
    progress: Callable[[DiscoveryProgress], None] | None = None,
) -> DiscoveryResult:
    """Find SMTP and IMAP settings for `email`, ranked and explained.

    A domain in the provider registry is answered at once, without DNS.
    Otherwise every DNS query goes through `resolver`, every HTTPS request
    through `fetcher` (by default an `HttpsFetcher` on the same resolver), so
    the whole chain can run offline. All sources share the `timeout` deadline;
    sources that did not answer in time are named in `result.timed_out`.
    `progress` is called as each source finishes and about once a second
    while some are pending. With a `cache`, results are reused for the TTL of
    the DNS answers they came from.

    Host names from the internet (autoconfig documents, SRV targets, MX-based
    and guessed names) must be DNS names or plain IP literals, and must not
    lead to loopback, private, link-local or other non-global addresses
    unless `allow_private` is set; others are dropped, and guessing never
    connects to them.
    """
    mailbox = parse_mailbox("email", email)
    domain = (mailbox.ascii_address or mailbox.address).rpartition("@")[2].lower()
    cache_key = f"{mailbox.address.casefold()}|{guess}|{allow_http}|{ispdb_url}|{allow_private}"
    if cache is not None and (cached := cache.get(cache_key)) is not None:
        return cached
    ctx = _Context(
        mailbox.address,
        domain,
        registry or ProviderRegistry.default(),
        resolver,
        fetcher
        or HttpsFetcher(resolver=resolver, ssl_context=tls_context, allow_private=allow_private),
        timeout,
        allow_http,
        ispdb_url,
        tls_context or ssl.create_default_context(),
        guess_ports or GUESS_PORTS,
        allow_private,
        deadline=time.monotonic() + timeout,
    )
    started = time.monotonic()
    candidates = _registry(ctx)
    reports = [SourceReport("registry", len(candidates), time.monotonic() - started)]
    if progress is not None:
        pending = () if candidates else tuple(n for n in _SOURCES if n != "ispdb" or ispdb_url)
        progress(DiscoveryProgress(reports[0], pending, reports[0].seconds))
    if not candidates:  # the registry knows the domain: nothing on the internet can do better
        more_reports, found = _gather(ctx, progress)
        reports += more_reports
        candidates += found
    if not candidates and guess and ctx.deadline - time.monotonic() > 0.5:
        outcome = _run(ctx, _guess)
        found = outcome if isinstance(outcome, list) else []
        error = None if isinstance(outcome, list) else f"{type(outcome).__name__}: {outcome}"
        reports.append(SourceReport("guess", len(found), time.monotonic() - started, error))
        candidates += found
    best: dict[tuple[str, str, int, Security], Candidate] = {}
    for candidate in sorted(candidates, key=lambda c: c.rank_key):
        best.setdefault(
            (candidate.protocol, candidate.host, candidate.port, candidate.security), candidate
        )
    ranked = list(best.values())
    provider = ctx.registry.by_domain(domain) or next(
        (ctx.registry.by_id(c.provider_id) for c in ranked if c.provider_id), None
    )
    result = DiscoveryResult(
        mailbox.address,
        tuple(c for c in ranked if c.protocol == "smtp"),
        tuple(c for c in ranked if c.protocol == "imap"),
        provider,
        tuple(reports),
    )
    if cache is not None and (result.smtp or result.imap):
        cache.put(cache_key, result, min(ctx.ttls, default=DEFAULT_CACHE_TTL))
    return result
