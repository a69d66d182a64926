"""The JSON that `mailbridge discover --json` prints for a `DiscoveryResult`."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["discovery_json"]


def _oauth2(info: Any) -> dict[str, Any] | None:
    """An `OAuth2Info` as JSON (scopes and required_for as lists), or None."""
    return None if info is None else attrs.asdict(info)


def _candidate(c: Any) -> dict[str, Any]:
    return {
        "host": c.host,
        "port": c.port,
        "security": c.security.value,
        "username": c.username,
        "auth_methods": list(c.auth_methods),
        "source": c.source,
        "trusted": c.trusted,
        "explanation": c.explanation,
        "oauth2": _oauth2(c.oauth2),
    }


def discovery_json(result: Any) -> dict[str, Any]:
    """What `discover()` found, with how to sign in with OAuth2 (`oauth2`, else null)."""
    return {
        "email": result.email,
        "provider": result.provider.id if result.provider else None,
        "oauth2": _oauth2(result.oauth2),
        "smtp": [_candidate(c) for c in result.smtp],
        "imap": [_candidate(c) for c in result.imap],
        "sources": [
            {
                "name": s.name,
                "found": s.found,
                "seconds": round(s.seconds, 3),
                "error": s.error,
                "timed_out": s.timed_out,
            }
            for s in result.sources
        ],
        "timed_out": list(result.timed_out),
    }
