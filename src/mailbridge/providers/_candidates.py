"""A discovered way to reach a mail server, where it came from, and how it ranks."""

from __future__ import annotations

from typing import Any

import attrs

from .._tokens import TokenSource
from ..settings import ImapSettings, Security, SmtpSettings
from ._oauth_info import OAuth2Info

__all__ = ["PRIORITY", "Candidate"]

PRIORITY = {"registry": 0, "mx": 1, "autoconfig": 2, "ispdb": 3, "srv": 4, "guess": 5}


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
    oauth2: OAuth2Info | None = None  # how to get tokens, when the server takes OAuth2

    @property
    def offers_oauth2(self) -> bool:
        """True when the server takes OAuth2 logins and it is known where tokens come from."""
        return self.oauth2 is not None and "oauth2" in self.auth_methods

    @property
    def rank_key(self) -> tuple[int, int, int]:
        """Encrypted first, then by source priority, then implicit TLS before STARTTLS."""
        return (
            self.security == Security.NONE,
            PRIORITY.get(self.source, 9),
            self.security != Security.IMPLICIT_TLS,
        )

    def smtp_settings(
        self,
        password: str | None = None,
        *,
        oauth2_token: TokenSource | None = None,
        **changes: Any,
    ) -> SmtpSettings:
        """`SmtpSettings` for this candidate (with the user name it found), logging in
        with `password` or with `oauth2_token` (a `TokenProvider`)."""
        return SmtpSettings(
            self.host, self.port, self.security, **_login(self, password, oauth2_token, changes)
        )

    def imap_settings(
        self,
        password: str | None = None,
        *,
        oauth2_token: TokenSource | None = None,
        **changes: Any,
    ) -> ImapSettings:
        """`ImapSettings` for this candidate, like `smtp_settings`."""
        return ImapSettings(
            self.host, self.port, self.security, **_login(self, password, oauth2_token, changes)
        )


def _login(
    candidate: Candidate,
    password: str | None,
    token: TokenSource | None,
    changes: dict[str, Any],
) -> dict[str, Any]:
    values: dict[str, Any] = {"password": password}
    if token is not None:
        values["oauth2_token"] = token
    values["username"] = candidate.username if password is not None or token else None
    return {**values, **changes}
