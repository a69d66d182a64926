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
    BASIC_AUTH_DISABLED = "basic_auth_disabled"
    AUTH_BLOCKED_BY_POLICY = "auth_blocked_by_policy"
    WEB_LOGIN_REQUIRED = "web_login_required"
    OAUTH_TOKEN_REFUSED = "oauth_token_refused"  # noqa: S105 (a category, not a token)
    OAUTH_GRANT_INVALID = "oauth_grant_invalid"
    OAUTH_CONSENT_REQUIRED = "oauth_consent_required"
    OAUTH_CLIENT_INVALID = "oauth_client_invalid"


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
