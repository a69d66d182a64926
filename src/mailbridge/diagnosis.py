"""What went wrong, said for a person: the `Diagnosis` attached to errors and reports."""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

__all__ = ["Category", "Diagnosis"]


class Category(enum.StrEnum):
    """What kind of failure a `Diagnosis` describes; stable values to branch on."""

    HOST_NOT_FOUND = "host_not_found"
    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection_lost"
    EXPECTED_IMPLICIT_TLS = "expected_implicit_tls"
    EXPECTED_PLAINTEXT = "expected_plaintext"
    TLS_HANDSHAKE = "tls_handshake"
    CERTIFICATE_INVALID = "certificate_invalid"
    CERTIFICATE_NAME_MISMATCH = "certificate_name_mismatch"
    STARTTLS_NOT_OFFERED = "starttls_not_offered"
    AUTH_FAILED = "auth_failed"
    APP_PASSWORD_REQUIRED = "app_password_required"  # noqa: S105 (a category, not a password)
    AUTH_DISABLED = "auth_disabled"
    AUTH_NOT_OFFERED = "auth_not_offered"
    AUTH_REQUIRES_TLS = "auth_requires_tls"
    AUTH_MECHANISM_UNSUPPORTED = "auth_mechanism_unsupported"
    AUTH_REQUIRED = "auth_required"
    SENDER_REFUSED = "sender_refused"
    RECIPIENT_REFUSED = "recipient_refused"
    MESSAGE_REJECTED = "message_rejected"
    MESSAGE_TOO_LARGE = "message_too_large"
    SMTPUTF8_UNSUPPORTED = "smtputf8_unsupported"
    SERVER_UNAVAILABLE = "server_unavailable"
    OUTCOME_UNKNOWN = "outcome_unknown"
    PROTOCOL = "protocol"
    BLACKLISTED = "blacklisted"
    BLACKLIST_QUERY_REFUSED = "blacklist_query_refused"
    BLACKLIST_RESOLVER_UNTRUSTED = "blacklist_resolver_untrusted"
    BLACKLIST_UNAVAILABLE = "blacklist_unavailable"
    BASIC_AUTH_DISABLED = "basic_auth_disabled"
    AUTH_BLOCKED_BY_POLICY = "auth_blocked_by_policy"
    WEB_LOGIN_REQUIRED = "web_login_required"
    OAUTH_TOKEN_REFUSED = "oauth_token_refused"  # noqa: S105 (a category, not a token)
    OAUTH_GRANT_INVALID = "oauth_grant_invalid"
    OAUTH_CONSENT_REQUIRED = "oauth_consent_required"
    OAUTH_CLIENT_INVALID = "oauth_client_invalid"
    CLIENT_UNAVAILABLE = "client_unavailable"  # the application's resolve_client raised


def _hints(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Diagnosis:
    """A failure explained: `category`, a one-line `summary`, and concrete `hints`.

    `help_url` is the provider's own help page for this failure, when there is one.
    """

    category: Category
    summary: str
    hints: tuple[str, ...] = attrs.field(default=(), converter=_hints)
    help_url: str | None = None

    def __str__(self) -> str:
        lines = [self.summary, *(f"- {hint}" for hint in self.hints)]
        if self.help_url:
            lines.append(f"More: {self.help_url}")
        return "\n".join(lines)


# -- blacklist (DNSBL) checks: the advice lives here with the rest ---------------------

_DQS_HINT = (
    "Use a Spamhaus Data Query Service (DQS) key (free for low volumes): pass dqs_key= "
    "(CLI: --dqs-key-env) and the queries go to your own DQS zone instead of the public mirrors."
)
_OWN_RESOLVER_HINT = (
    "Or ask a DNS resolver of your own (pass resolver=, CLI: --nameserver) instead of a "
    "public one such as 8.8.8.8 or 1.1.1.1, or one shared by a cloud provider."
)
_LIST_ERRORS = {  # Spamhaus's error codes (spamhaus.org news 788); {name} is the list
    "127.255.255.252": (
        "{name} answered 'typing error in the list name'",
        "Check the list's zone name; with a DQS key, check that the key is right.",
    ),
    "127.255.255.254": (
        "your DNS resolver is blocked by {name}: it answers no queries that come through "
        "public or unattributable resolvers",
        _DQS_HINT,
        _OWN_RESOLVER_HINT,
    ),
    "127.255.255.255": (
        "your DNS resolver sent {name} too many queries (over its free limit)",
        _DQS_HINT,
    ),
}


def dnsbl_listed(
    list_name: str, address: str, meanings: tuple[str, ...], reason: str | None, removal: str
) -> Diagnosis:
    """A listing: what it means for delivery and how to get off the list."""
    hints = [f"The list says: {reason}" if reason else f"The list's codes: {', '.join(meanings)}."]
    hints.append(
        "Find and stop what sent the spam first (a hacked mailbox or web form, an infected "
        "computer behind the same address), or the listing comes back."
    )
    hints.append(f"Then ask for removal: {removal}")
    return Diagnosis(
        Category.BLACKLISTED,
        f"{address} is on the blacklist {list_name}: some recipients' servers will refuse "
        "or junk mail from it.",
        hints,
    )


def dnsbl_refused(list_name: str, codes: tuple[str, ...]) -> Diagnosis:
    """An error code instead of an answer (Spamhaus 127.255.255.x): never a listing."""
    known = [_LIST_ERRORS[code] for code in codes if code in _LIST_ERRORS]
    summary, *hints = (
        known[0]
        if known
        else (
            "{name} refused to answer",
            "With a DQS key, check that the key is valid and its subscription active.",
        )
    )
    return Diagnosis(
        Category.BLACKLIST_QUERY_REFUSED,
        f"{list_name} could not be checked: {summary.format(name=list_name)} "
        f"(error code {', '.join(codes)}; this is not a listing).",
        hints,
    )


def dnsbl_untrusted(list_name: str, problem: str) -> Diagnosis:
    """The resolver's answers cannot be believed: what it did and what to use instead."""
    if problem == "outside":
        return Diagnosis(
            Category.BLACKLIST_RESOLVER_UNTRUSTED,
            f"{list_name} could not be checked: your DNS resolver answers with addresses "
            "that no blacklist uses (outside 127.0.0.0/8). It probably rewrites unknown "
            "names to an advertising or filtering page.",
            (
                "Use a DNS resolver that returns 'name not found' unchanged (pass resolver=, "
                "CLI: --nameserver).",
            ),
        )
    if problem == "test_missing":
        return Diagnosis(
            Category.BLACKLIST_RESOLVER_UNTRUSTED,
            f"{list_name} could not be checked: it does not list its own test address "
            "127.0.0.2, so its answers mean nothing from here.",
            (
                "Your DNS resolver may be blocked by the list or need registering with it "
                "(Barracuda asks to register the resolver's address), or the list is gone.",
                _OWN_RESOLVER_HINT,
            ),
        )
    return Diagnosis(
        Category.BLACKLIST_RESOLVER_UNTRUSTED,
        f"{list_name} could not be checked: it claims the test address 127.0.0.1 is listed, "
        "so it would list every address (a list that was shut down, or a resolver that "
        "answers every name).",
        ("Do not use this list; use a DNS resolver that answers honestly.",),
    )


def dnsbl_failed(what: str, *, timed_out: bool, host_missing: bool = False) -> Diagnosis:
    """A lookup for a blacklist check failed, took too long, or found no address to check."""
    if timed_out:
        return Diagnosis(
            Category.TIMEOUT,
            f"{what}: no answer in time.",
            ("Try again later; if it keeps happening, check the DNS resolver.",),
        )
    if host_missing:
        return Diagnosis(
            Category.HOST_NOT_FOUND, f"{what}.", ("Check the spelling of the server name.",)
        )
    return Diagnosis(
        Category.BLACKLIST_UNAVAILABLE,
        f"{what}.",
        ("Try again later; the list or your DNS resolver had a problem.",),
    )
