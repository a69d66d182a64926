"""SPF imitation: the tenant's own address through the platform's relay, once SPF allows it.

Apart from the other identities (`_identity.py`) because it alone needs DNS: the SPF
check, the record to publish and DMARC load dnspython when a client in this mode is made.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable

import attrs
import dns.resolver

from ._addresses import Mailbox
from ._identity import Addressing, PlatformRelay, RelayIdentity, named
from ._message import DocumentEmail
from .dnsauth._dmarc import DmarcAlignment, dmarc_alignment
from .dnsauth._spf import DEFAULT_TIMEOUT, SpfResult, SpfVerdict, check_host
from .dnsauth._spf_plan import SpfPlan, plan_include
from .errors import MessageError, SenderNotAuthorized

__all__ = ["SenderAuthorization", "SpfIdentity"]


def _within(resolver: dns.resolver.Resolver | None, seconds: float) -> dns.resolver.Resolver:
    """A copy of `resolver` (or of the system's) whose queries end within `seconds`."""
    bounded = copy.copy(resolver or dns.resolver.get_default_resolver())
    bounded.lifetime = min(bounded.lifetime, seconds)
    bounded.timeout = min(bounded.timeout, bounded.lifetime)
    return bounded


@attrs.frozen
class SenderAuthorization:
    """Whether the tenant's SPF record lets the platform's relay send as the tenant.

    `authorized` needs `pass` for every relay IP; `results` holds the SPF result
    per IP; `dmarc` says whether mail in this mode will align with the tenant's
    DMARC policy.
    """

    authorized: bool
    reason: str
    results: tuple[SpfResult, ...] = ()
    dmarc: DmarcAlignment | None = None


@attrs.define
class SpfIdentity:
    """The tenant's own address through the platform's relay, once SPF allows it.

    The check runs before sending and is cached for the records' TTL. When it
    fails, `fallback=True` sends in relay mode instead (the result's `note` says
    why); otherwise `SenderNotAuthorized` is raised with the record to publish.
    `timeout` bounds the whole check (every relay IP, the plan to publish when
    `fallback` is off, then DMARC): a tenant's record cannot hold a send longer,
    and sends that wait for a check running in another thread share its answer
    (plan included) instead of repeating it.
    """

    tenant: Mailbox
    relay: PlatformRelay
    display_name: str | None = None
    fallback: bool = True
    resolver: dns.resolver.Resolver | None = None
    clock: Callable[[], float] = time.monotonic
    timeout: float = DEFAULT_TIMEOUT
    mode: str = "spf_imitation"
    _cached: tuple[float, SenderAuthorization, SpfPlan | None] | None = attrs.field(
        default=None, init=False
    )
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _checks: int = attrs.field(default=0, init=False)  # checks completed so far

    @property
    def message_id_domain(self) -> str:
        """The tenant's domain."""
        return self.tenant.envelope_address.rpartition("@")[2]

    def authorization(self, *, refresh: bool = False) -> SenderAuthorization:
        """Check (or reuse a cached check of) the tenant's SPF record for every relay IP.

        Takes at most `timeout` seconds, plus the wait for a check that another
        thread is running (whose answer is then returned).
        """
        return self._authorized(refresh)[0]

    def _authorized(self, refresh: bool) -> tuple[SenderAuthorization, SpfPlan | None]:
        checks_before = self._checks
        with self._lock:
            if self._cached is not None and (
                self._checks != checks_before  # checked while this call waited: share it
                or (not refresh and self.clock() < self._cached[0])
            ):
                return self._cached[1], self._cached[2]
            authorization, plan, ttl = self._check()
            self._cached = (self.clock() + ttl, authorization, plan)
            self._checks += 1
            return authorization, plan

    def _plan(self, results: tuple[SpfResult, ...], seconds: float) -> SpfPlan | None:
        """What the tenant must publish, when a send will raise for want of it."""
        if self.fallback or not self.relay.spf_include or seconds <= 0:
            return None
        if any(r.result == SpfVerdict.TEMPERROR for r in results):
            return None  # the record could not be read in time: no plan can be made from it
        return plan_include(
            self.message_id_domain, self.relay.spf_include, resolver=self.resolver, timeout=seconds
        )

    def _check(self) -> tuple[SenderAuthorization, SpfPlan | None, float]:
        """One check of every relay IP, the plan and DMARC within `timeout`; and its TTL."""
        deadline = time.monotonic() + self.timeout
        domain = self.message_id_domain
        results = tuple(
            check_host(
                ip,
                domain,
                self.tenant.envelope_address,
                resolver=self.resolver,
                timeout=max(0.0, deadline - time.monotonic()),
            )
            for ip in self.relay.sending_ips
        )
        if not results:
            reason = "the relay lists no sending IPs, so nothing can be checked"
            return SenderAuthorization(False, reason), None, 0  # not cached: check again
        failed = [r for r in results if r.result != SpfVerdict.PASS]
        plan = None
        if failed:
            reason = f"SPF of {domain} gives {failed[0].result} for the relay: {failed[0].reason}"
            plan = self._plan(results, (deadline - time.monotonic()) / 2)  # half for DMARC
        else:
            reason = f"SPF of {domain} authorises the relay"
        remaining = deadline - time.monotonic()
        if remaining > 0:
            dmarc = dmarc_alignment(
                domain,
                spf_domain=domain,
                spf_pass=not failed,
                resolver=_within(self.resolver, remaining / 2),  # up to two lookups
            )
        else:
            dmarc = DmarcAlignment(
                False, f"the DMARC policy of {domain} was not read: the check ran out of time"
            )
        ttl = min((r.ttl for r in results), default=0)
        return SenderAuthorization(not failed, reason, results, dmarc), plan, ttl

    def addressing(self, email: DocumentEmail, message_id: str) -> Addressing:
        """The tenant's address everywhere when authorised; else fall back or raise."""
        override = email.from_override
        if override is not None and override.domain.lower() != self.message_id_domain.lower():
            raise MessageError(
                "from_override",
                f"must be an address at {self.message_id_domain}: only that domain's SPF "
                "record authorises this relay",
            )
        authorization, plan = self._authorized(refresh=False)
        if authorization.authorized:
            author = email.from_override or named(self.tenant, self.display_name)
            return Addressing(author, email.reply_to, self.tenant, self.mode)
        if self.fallback:
            relayed = RelayIdentity(self.tenant, self.relay, self.display_name)
            return attrs.evolve(
                relayed.addressing(email, message_id),
                note=f"sent in relay mode: {authorization.reason}",
            )
        advice = f". {plan.instructions}" if plan else ""
        if plan is None and self.relay.spf_include:
            advice = ". Until the record can be read, no record to publish can be worked out"
        message = authorization.reason + advice
        raise SenderNotAuthorized(message, plan=plan, results=authorization.results)
