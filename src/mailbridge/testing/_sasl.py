"""SASL pieces the fake servers share: reading and checking an XOAUTH2 initial response."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

__all__ = ["xoauth2_user"]


def xoauth2_user(blob: bytes, tokens: Mapping[str, str]) -> tuple[str, bool]:
    """The user named in an XOAUTH2 response, and whether its bearer token is the right one."""
    fields = dict(
        part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part
    )
    user, auth = fields.get("user", ""), fields.get("auth", "")
    token = tokens.get(user)
    valid = token is not None and hmac.compare_digest(auth.encode(), f"Bearer {token}".encode())
    return user, valid
