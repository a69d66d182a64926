"""A discovered way to reach a mail server, where it came from, and how it ranks."""

from __future__ import annotations

from typing import Any

import attrs

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
