"""The sources discovery asks: provider list, MX, autoconfig, ISPDB, SRV and guessing.

Each takes the shared `_Context` (the address, the resolver, the fetcher, the
deadline) and returns candidates; `discovery.discover()` runs them.
"""

from __future__ import annotations

import concurrent.futures
import ssl
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import dns.exception
import dns.flags
import dns.resolver

from .._psl import registered_domain
from ..errors import AutoconfigError
from ..settings import Security
from ._autoconfig import AutoconfigCandidate, parse_autoconfig
from ._candidates import Candidate
from ._fetch import Fetcher
from ._hosts import checked_addresses, system_resolver
from ._models import Provider
from ._oauth_info import OAuth2Info
from ._probe import ProbeTarget, probe_endpoint
from ._registry import ProviderRegistry

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
    verdicts: dict[str, bool] = attrs.field(factory=dict)  # host -> acceptable, asked once
    deadline: float = attrs.field(factory=lambda: time.monotonic() + 3600.0)

    def remaining(self) -> float:
        """Seconds left until the overall deadline (at least a sliver, for clean failures)."""
        return max(0.05, min(self.timeout, self.deadline - time.monotonic()))

    def acceptable(self, candidate: Candidate) -> bool:
        """False for a host that is no DNS name, or that leads to an internal address."""
        host = candidate.host.lower()
        if host not in self.verdicts:
            _, refused = checked_addresses(
                host, self.resolver, self.remaining(), allow_private=self.allow_private
            )
            self.verdicts[host] = refused is None
        return self.verdicts[host]


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
                    provider.oauth2,
                )
            )
    return found


def _oauth2_of(ctx: _Context, candidate: AutoconfigCandidate, trusted: bool) -> OAuth2Info | None:
    """The document's `<oAuth2>` block as `OAuth2Info`, or None when it is not to be used.

    An issuer the provider list knows (login.microsoftonline.com) gets the list's
    endpoints and scopes, never the document's; an unknown issuer is only taken
    from a trusted document, since the application will send refresh tokens there.
    """
    config = candidate.oauth2
    if config is None:
        return None
    for provider in ctx.registry:
        if provider.oauth2 is not None and provider.oauth2.issuer == config.issuer:
            return provider.oauth2
    if not trusted:
        return None
    return OAuth2Info(
        config.issuer, config.scopes, auth_url=config.auth_url, token_url=config.token_url
    )


def _registry(ctx: _Context) -> list[Candidate]:
    provider = ctx.registry.by_domain(ctx.domain)
    if provider is None:
        return []
    return _from_provider(
        ctx, provider, "registry", f"{provider.name}, from mailbridge's provider list"
    )


def _query(ctx: _Context, name: str, rdtype: str) -> tuple[list[Any], bool]:
    resolver = ctx.resolver or system_resolver()
    if resolver is None:
        return [], False
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
                oauth2=_oauth2_of(ctx, c, trusted),
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
