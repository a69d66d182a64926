"""SPF macro expansion (RFC 7208 section 7)."""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Callable

import attrs

__all__ = ["MacroContext", "MacroError", "expand"]

_MACRO = re.compile(r"%(?:\{([a-zA-Z])([0-9]*)(r?)([.\-+,/_=]*)\}|(.))", re.DOTALL)
_EXPLANATION_ONLY = frozenset("crt")


class MacroError(ValueError):
    """A macro-string that breaks RFC 7208 section 7 (a permerror)."""


@attrs.frozen
class MacroContext:
    """What macros expand to during one check_host() evaluation."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    domain: str
    helo: str = "unknown"
    receiver: str = "unknown"
    validated_name: Callable[[], str] | None = None  # %{p}: looked up only when used


def _ip_macro(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def _letter(letter: str, context: MacroContext) -> str:
    local, _, sender_domain = context.sender.rpartition("@")
    values: dict[str, Callable[[], str]] = {
        "s": lambda: context.sender,
        "l": lambda: local or "postmaster",
        "o": lambda: sender_domain,
        "d": lambda: context.domain,
        "i": lambda: _ip_macro(context.ip),
        "p": lambda: context.validated_name() if context.validated_name else "unknown",
        "v": lambda: "in-addr" if context.ip.version == 4 else "ip6",
        "h": lambda: context.helo,
        "c": lambda: str(context.ip),
        "r": lambda: context.receiver,
        "t": lambda: str(int(time.time())),
    }
    return values[letter]()


def _transform(value: str, digits: str, reverse: str, delimiters: str) -> str:
    parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
    if reverse:
        parts.reverse()
    if digits:
        count = int(digits)
        if count == 0:
            raise MacroError("a macro may not keep zero labels")
        parts = parts[-count:]
    return ".".join(parts)


def expand(text: str, context: MacroContext, *, explanation: bool = False) -> str:
    """Expand every macro in `text`; raises `MacroError` on invalid syntax."""
    out: list[str] = []
    position = 0
    for match in _MACRO.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        letter, digits, reverse, delimiters, escape = match.groups()
        if escape is not None:
            if escape not in "%_-":
                raise MacroError(f"invalid macro %{escape}")
            out.append({"%": "%", "_": " ", "-": "%20"}[escape])
            continue
        lower = letter.lower()
        if lower not in "sloidpvhcrt":
            raise MacroError(f"unknown macro letter {letter!r}")
        if lower in _EXPLANATION_ONLY and not explanation:
            raise MacroError(f"macro %{{{letter}}} is only allowed in explanations")
        value = _transform(_letter(lower, context), digits, reverse, delimiters)
        if letter.isupper():
            value = urllib.parse.quote(value, safe="-._~")
        out.append(value)
    rest = text[position:]
    if "%" in rest:
        raise MacroError("a lone % must be written %%")
    out.append(rest)
    return "".join(out)
