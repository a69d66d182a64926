"""Keep tokens, codes and client secrets out of the OAuth libraries' debug logs.

requests-oauthlib logs the token request (code, PKCE verifier, the client's Basic
credentials) and the token response (access and refresh tokens) at DEBUG; msal's
token cache logs the authorization code and verifier it redeemed. An application
that turns on DEBUG logging must not write them to its log files, so the adapters
put `SecretScrubber` on those libraries' loggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["SecretScrubber", "scrub_loggers"]

_KEYS = (
    "access_token|refresh_token|id_token|token|code|code_verifier|device_code|"
    "client_secret|client_assertion|assertion|password"
)
_HIDDEN = "********"
_PATTERNS = (
    # JSON and Python reprs: "access_token": "…", 'code': '…'
    re.compile(rf"""(["'](?:{_KEYS})["']\s*:\s*["'])[^"']+"""),
    # forms and query strings: code=…&, refresh_token=…
    re.compile(rf"""((?:^|[?&\s"'])(?:{_KEYS})=)[^&\s"']+"""),
    # Authorization headers
    re.compile(r"""((?:Basic|Bearer)\s+)[A-Za-z0-9._~+/=-]+""", re.IGNORECASE),
)


def scrub(text: str) -> str:
    """`text` with every token, code and secret value replaced by asterisks."""
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{_HIDDEN}", text)
    return text


class SecretScrubber(logging.Filter):
    """A logger filter that rewrites a record's message without its secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: let logging report it as it would
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_SCRUBBER = SecretScrubber()


def scrub_loggers(names: Iterable[str]) -> None:
    """Put the scrubber on each named logger (once). A logger's filters only see the
    records logged to it, not its children's, so each module's logger is named."""
    for name in names:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)
