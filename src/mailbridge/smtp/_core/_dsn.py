"""Asking for delivery status notifications (RFC 3461) on MAIL and RCPT, sans I/O.

When the server offers DSN and the message has an envelope id, MAIL carries
``RET=HDRS ENVID=<id>`` (a bounce returns only the headers, and names our id)
and every RCPT ``NOTIFY=FAILURE,DELAY ORCPT=rfc822;<address>`` (bounces and
delay warnings, never success notices), so a bounce can be tied to the message.
"""

from __future__ import annotations

from ...errors import MessageError

__all__ = ["dsn_mail_parameters", "dsn_rcpt_parameters", "xtext"]

MAX_ENVID = 100  # RFC 3461 section 4.4


def xtext(value: str) -> str:
    """RFC 3461 xtext: "+", "=" and octets outside 33..126 as "+HH" (UTF-8 encoded)."""
    return "".join(
        chr(octet) if 33 <= octet <= 126 and octet not in (43, 61) else f"+{octet:02X}"
        for octet in value.encode("utf-8")
    )


def dsn_mail_parameters(extensions: dict[str, str], envelope_id: str | None) -> list[str]:
    """RET and ENVID for MAIL, when the server offers DSN and there is an envelope id."""
    if envelope_id is None or "DSN" not in extensions:
        return []
    encoded = xtext(envelope_id)
    if not encoded:  # "ENVID=" alone is a syntax error: the server would refuse MAIL
        raise MessageError("envelope_id", "must not be empty")
    if len(encoded) > MAX_ENVID:
        raise MessageError("envelope_id", f"is over {MAX_ENVID} characters as xtext")
    return ["RET=HDRS", f"ENVID={encoded}"]


def dsn_rcpt_parameters(extensions: dict[str, str], envelope_id: str | None, rcpt: str) -> str:
    """NOTIFY (and ORCPT for an ASCII address) for one RCPT, with its leading space."""
    if envelope_id is None or "DSN" not in extensions:
        return ""
    orcpt = f" ORCPT=rfc822;{xtext(rcpt)}" if rcpt.isascii() else ""
    return " NOTIFY=FAILURE,DELAY" + orcpt
