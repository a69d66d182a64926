"""The set-up wizard: from address and password to proven SMTP (and IMAP) settings."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from .._client import DeliveryClient
from .._pinning import pinned
from .._results import ConnectionReport
from .._tokens import TokenSource
from ..diagnosis import Category, Diagnosis
from ..errors import ConfigurationError, MailbridgeError
from ..imap._probe import probe_imap
from ..settings import ImapSettings, SmtpSettings
from ..smtp.probe import probe_smtp
from ._discovery import Candidate, DiscoveryResult, discover
from ._hosts import checked_addresses
from ._models import Provider
from ._oauth_info import OAuth2Info

__all__ = ["SetupAttempt", "SetupResult", "setup"]

# Failures that say more about the account than about the server: they win the diagnosis.
_ACCOUNT_PROBLEMS = (
    Category.OAUTH_CONSENT_REQUIRED,
    Category.OAUTH_GRANT_INVALID,
    Category.BASIC_AUTH_DISABLED,
    Category.AUTH_BLOCKED_BY_POLICY,
    Category.WEB_LOGIN_REQUIRED,
    Category.APP_PASSWORD_REQUIRED,
    Category.AUTH_DISABLED,
    Category.OAUTH_TOKEN_REFUSED,
    Category.AUTH_FAILED,
    Category.AUTH_MECHANISM_UNSUPPORTED,
)
# Failures of the OAuth2 sign-in itself: trying other servers would only ask again.
_SIGN_IN_PROBLEMS = (
    Category.OAUTH_GRANT_INVALID,
    Category.OAUTH_CONSENT_REQUIRED,
    Category.OAUTH_CLIENT_INVALID,
)
# Failures to reach a server at all: then the host's next address is worth a try.
_UNREACHABLE = (Category.CONNECTION_REFUSED, Category.TIMEOUT)
MAX_ADDRESSES_TRIED = 3  # of one host name, in DNS order


@attrs.frozen
class SetupAttempt:
    """One candidate tried with a real connection and login, and what happened."""

    candidate: Candidate
    report: ConnectionReport


@attrs.frozen
class SetupResult:
    """Working settings (or None), every attempt, and a provider-aware diagnosis on failure."""

    ok: bool
    smtp: SmtpSettings | None
    imap: ImapSettings | None
    attempts: tuple[SetupAttempt, ...]
    discovery: DiscoveryResult
    diagnosis: Diagnosis | None = None

    def client(self, display_name: str | None = None) -> DeliveryClient:
        """A `DeliveryClient` with the settings that worked; raises when none did."""
        if self.smtp is None:
            raise MailbridgeError(f"no working SMTP settings: {self.diagnosis}")
        return DeliveryClient.own_smtp(self.discovery.email, self.smtp, display_name, self.imap)

    @property
    def provider(self) -> Provider | None:
        """The provider discovery recognised, if any."""
        return self.discovery.provider

    @property
    def oauth2(self) -> OAuth2Info | None:
        """How to sign in with OAuth2 instead (see `OAuthSetup`), when it is offered here."""
        return self.discovery.oauth2

    def __str__(self) -> str:
        lines = []
        for attempt in self.attempts:
            c = attempt.candidate
            outcome = (
                "works"
                if attempt.report.ok
                else (attempt.report.diagnosis.summary if attempt.report.diagnosis else "failed")
            )
            lines.append(f"{c.protocol.upper()} {c.host}:{c.port} {c.security.value}: {outcome}")
        if self.diagnosis is not None:
            lines.append(str(self.diagnosis))
        return "\n".join(lines) or "nothing to try"


def _provider_advice(diagnosis: Diagnosis, provider: Provider | None) -> Diagnosis:
    if provider is None or diagnosis.category not in _ACCOUNT_PROBLEMS:
        return diagnosis
    hints = list(diagnosis.hints) + [h for h in provider.hints if h not in diagnosis.hints]
    for topic in ("app_passwords", "smtp_auth"):
        link = provider.docs.get(topic)
        if link:
            hints.append(f"{provider.name}: {link}")
    return attrs.evolve(diagnosis, summary=f"{provider.name}: {diagnosis.summary}", hints=hints)


_Settings = TypeVar("_Settings", SmtpSettings, ImapSettings)


def _first_reachable(
    settings: _Settings, addresses: list[str], probe: Callable[[_Settings], ConnectionReport]
) -> ConnectionReport:
    """The test of the first of the host's `addresses` that can be connected to at all.

    The next address is tried only when connecting failed (refused, no answer),
    never after a server answered, so a password is tried on one server at most.
    """
    report = None
    for address in addresses:
        report = probe(pinned(settings, address))
        if report.ok or report.diagnosis is None or report.diagnosis.category not in _UNREACHABLE:
            return report
    assert report is not None, "called with at least one address"
    return report


def _best_failure(attempts: list[SetupAttempt]) -> Diagnosis | None:
    diagnoses = [a.report.diagnosis for a in attempts if a.report.diagnosis is not None]
    for category in _ACCOUNT_PROBLEMS:
        for diagnosis in diagnoses:
            if diagnosis.category == category:
                return diagnosis
    return diagnoses[0] if diagnoses else None


def _signed_out(attempts: list[SetupAttempt]) -> bool:
    """True once the sign-in itself failed (revoked, no consent): no server can help."""
    return any(
        a.report.diagnosis is not None and a.report.diagnosis.category in _SIGN_IN_PROBLEMS
        for a in attempts
    )


def _no_oauth2(email: str) -> Diagnosis:
    return Diagnosis(
        Category.AUTH_MECHANISM_UNSUPPORTED,
        f"The mail servers found for {email} do not take OAuth2 sign-ins.",
        ("Use the mailbox password or an app password for this provider instead.",),
    )


def setup(
    email: str,
    password: str | None = None,
    *,
    oauth2_token: TokenSource | None = None,
    username: str | None = None,
    want_imap: bool = True,
    max_attempts: int = 6,
    try_untrusted: bool = False,
    allow_private: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    command_timeout: float = 15.0,
    **discover_options: Any,
) -> SetupResult:
    """Discover the servers for `email`, try them in order with a real login, keep what works.

    `discover_options` go to `discover()` (resolver, fetcher, registry, timeout,
    ...). Each SMTP (and, with `want_imap`, IMAP) candidate is tested with a
    connection test until one works; the result holds every attempt and, when
    nothing worked, the most telling diagnosis with the provider's own advice.

    The password is only sent to trusted candidates (the provider list, HTTPS
    autoconfig, DNSSEC-authenticated DNS) unless `try_untrusted` is set — show
    the others to the tenant for confirmation instead — and never to loopback,
    private or link-local addresses unless `allow_private` is set, so a
    hostile DNS record cannot aim logins at the platform's own network.
    Host names must be DNS names or plain IP literals (numeric forms such as
    ``0x7f000001`` are refused); each is resolved once, and the connection
    goes to an address that was checked, with TLS verified against the name;
    when nothing answers there, the host's next checked address is tried (at
    most three, each within `connect_timeout`).

    With `oauth2_token` (a `TokenProvider` from an OAuth2 sign-in, see
    `OAuthSetup`) instead of a password, only servers that take OAuth2 are
    tried, with the same rules; `username` replaces the user name discovery
    found (the account that signed in).
    """
    if (password is None) == (oauth2_token is None):
        raise ConfigurationError("password", "give either a password or an oauth2_token")
    found = discover(
        email, tls_context=ssl_context, allow_private=allow_private, **discover_options
    )
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "command_timeout": command_timeout,
    }
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    attempts: list[SetupAttempt] = []
    smtp = imap = None
    resolver = discover_options.get("resolver")

    if username is not None:
        options["username"] = username
    if oauth2_token is not None:
        options["oauth2_token"] = oauth2_token

    def addresses(candidate: Candidate) -> list[str]:
        """The checked addresses to connect to; none when the candidate is refused."""
        if not candidate.trusted and not try_untrusted:
            return []
        if oauth2_token is not None and "oauth2" not in candidate.auth_methods:
            return []  # a token goes only where OAuth2 is expected
        # Resolved once: the connection goes to an address that was checked.
        found, refused = checked_addresses(
            candidate.host, resolver, connect_timeout, allow_private=allow_private
        )
        return [] if refused else found[:MAX_ADDRESSES_TRIED]

    for candidate in found.smtp:
        if sum(a.candidate.protocol == "smtp" for a in attempts) >= max_attempts:
            break
        if _signed_out(attempts):
            break
        if not (pins := addresses(candidate)):
            continue
        settings = candidate.smtp_settings(password, **options)
        report = _first_reachable(settings, pins, probe_smtp)
        attempts.append(SetupAttempt(candidate, report))
        if report.ok:
            smtp = settings
            break
    if want_imap:
        for candidate in found.imap:
            if sum(a.candidate.protocol == "imap" for a in attempts) >= max_attempts:
                break
            if _signed_out(attempts):
                break
            if not (pins := addresses(candidate)):
                continue
            imap_settings = candidate.imap_settings(password, **options)
            report = _first_reachable(imap_settings, pins, probe_imap)
            attempts.append(SetupAttempt(candidate, report))
            if report.ok:
                imap = imap_settings
                break
    ok = smtp is not None and (imap is not None or not want_imap or not found.imap)
    diagnosis = None
    if smtp is None:
        failure = _best_failure([a for a in attempts if a.candidate.protocol == "smtp"])
        if failure is not None:
            diagnosis = _provider_advice(failure, found.provider)
        elif oauth2_token is not None and found.smtp:
            diagnosis = _no_oauth2(email)
        elif found.smtp:
            diagnosis = Diagnosis(
                Category.HOST_NOT_FOUND,
                f"Only unconfirmed server settings were found for {email}.",
                tuple(
                    f"Check and confirm: {c.host}:{c.port} ({c.explanation})"
                    for c in found.smtp[:3]
                ),
            )
        else:
            diagnosis = Diagnosis(
                Category.HOST_NOT_FOUND,
                f"No mail server settings were found for {email}.",
                (
                    "Enter the SMTP server, port and security by hand (your provider's help "
                    "pages list them).",
                ),
            )
    elif want_imap and found.imap and imap is None:
        failure = _best_failure([a for a in attempts if a.candidate.protocol == "imap"])
        diagnosis = _provider_advice(failure, found.provider) if failure else None
    return SetupResult(ok, smtp, imap, tuple(attempts), found, diagnosis)
