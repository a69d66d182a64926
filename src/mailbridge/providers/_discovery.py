"""Autodiscovery: from an address to ranked, explained SMTP and IMAP settings.

Sources run concurrently under one deadline: the provider registry (by domain),
MX records matched against the registry, the domain's autoconfig documents,
an ISPDB-style database (off by default), RFC 6186/8314 SRV records; guessing
by probing common host names runs only when all of them found nothing.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import dns.resolver

from .._addresses import parse_mailbox
from ..settings import Security
from ._candidates import PRIORITY, Candidate
from ._fetch import Fetcher, HttpsFetcher
from ._models import Provider
from ._oauth_info import OAuth2Info
from ._registry import ProviderRegistry
from ._sources import _SOURCES, GUESS_PORTS, _Context, _guess, _registry

__all__ = [
    "GUESS_PORTS",
    "PRIORITY",
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

    @property
    def oauth2(self) -> OAuth2Info | None:
        """How to sign in with OAuth2 here, when the provider or a trusted server offers it.

        A set-up form shows "Sign in with Microsoft/Google" when this is not None.
        """
        if self.provider is not None and self.provider.supports_oauth2:
            return self.provider.oauth2
        return next((c.oauth2 for c in self.smtp if c.offers_oauth2 and c.trusted), None)


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
            return reports, candidates  # a DNSSEC-authenticated MX match: the best answer
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
