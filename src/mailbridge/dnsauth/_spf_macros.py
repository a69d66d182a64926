"""SPF macro strings (RFC 7208 section 7): parsed once, expanded in bounded time and memory.

A record's macro-strings are parsed (and so validated) before anything is
evaluated. Expanding one for a DNS query builds only the rightmost 253
characters that RFC 7208 7.3 keeps, however long the full expansion would be;
an explanation is cut at `MAX_EXPLANATION` characters.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Callable

import attrs

__all__ = [
    "MAX_DOMAIN_LENGTH",
    "MAX_EXPLANATION",
    "MacroContext",
    "MacroError",
    "MacroString",
    "MacroTimeout",
    "expand",
    "expand_domain",
    "parse_macro_string",
    "truncate_domain",
]

MAX_DOMAIN_LENGTH = 253  # RFC 7208 7.3: longer expansions lose labels on the left
MAX_EXPLANATION = 512  # characters of an explanation kept (it ends up in an SMTP reply)
_DEADLINE_EVERY = 256  # tokens between two looks at the clock

_MACRO = re.compile(r"%(?:\{([a-zA-Z])([0-9]*)(r?)([.\-+,/_=]*)\}|(.))", re.DOTALL)
_LETTERS = frozenset("slodipvhcrt")
_EXPLANATION_ONLY = frozenset("crt")  # RFC 7208 7.2
_ESCAPES = {"%": "%", "_": " ", "-": "%20"}
# macro-literal = %x21-24 / %x26-7E; an explain-string may also hold SP.
_NOT_LITERAL = re.compile(r"[^\x21-\x7e]")
_NOT_EXPLANATION = re.compile(r"[^\x20-\x7e]")


class MacroError(ValueError):
    """A macro-string that breaks RFC 7208 section 7 (a permerror)."""


class MacroTimeout(Exception):
    """The deadline passed while a macro-string was parsed or expanded."""


@attrs.frozen
class MacroContext:
    """What macros expand to during one check_host() evaluation."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    domain: str
    helo: str = "unknown"
    receiver: str = "unknown"
    validated_name: Callable[[], str] | None = None  # %{p}: looked up only when used


@attrs.frozen
class _Macro:
    letter: str  # lower case
    escape: bool  # written in upper case: URL-escape the value
    keep: int  # rightmost parts to keep; 0 keeps all
    reverse: bool
    delimiters: str


@attrs.frozen
class MacroString:
    """A parsed macro-string: literal text and macros, in order.

    `ends_with_macro` tells whether the text ends in a macro-expand (which can
    be a domain-spec's domain-end); `tail` is the text after the last one.
    """

    tokens: tuple[str | _Macro, ...]
    tail: str

    @property
    def ends_with_macro(self) -> bool:
        """True when the text ends in a macro-expand (`%{..}`, `%%`, `%_` or `%-`)."""
        return not self.tail and bool(self.tokens)


def _check_deadline(deadline: float | None, count: int) -> None:
    if deadline is not None and count % _DEADLINE_EVERY == 0 and time.monotonic() > deadline:
        raise MacroTimeout("the deadline passed during macro expansion")


def _keep(digits: str) -> int:
    if not digits:
        return 0
    significant = digits.lstrip("0")
    if not significant:
        raise MacroError("a macro may not keep zero labels")
    # More parts than a value has means all of them (RFC 7208 7.3); a name has at most
    # 127 labels, so anything with more than four digits is "all" (and int() of a
    # 5,000-digit string would raise).
    return int(significant) if len(significant) <= 4 else 0


def parse_macro_string(
    text: str, *, explanation: bool = False, deadline: float | None = None
) -> MacroString:
    """Parse (and so validate) a macro-string; `explanation` for an exp= TXT record.

    Raises `MacroError` for anything RFC 7208 7.1 does not allow: characters
    other than visible ASCII (and SP in explanations), a `%` not starting a
    macro, unknown letters, `c`/`r`/`t` outside explanations, a zero DIGIT.
    """
    bad = (_NOT_EXPLANATION if explanation else _NOT_LITERAL).search(text)
    if bad:
        raise MacroError(f"character {bad.group()!r} is not allowed in a macro-string")
    tokens: list[str | _Macro] = []
    position = 0
    for count, match in enumerate(_MACRO.finditer(text), start=1):
        _check_deadline(deadline, count)
        if match.start() > position:
            tokens.append(text[position : match.start()])
        position = match.end()
        letter, digits, reverse, delimiters, escape = match.groups()
        if escape is not None:
            if escape not in _ESCAPES:
                raise MacroError(f"invalid macro %{escape}")
            tokens.append(_ESCAPES[escape])
            continue
        lower = letter.lower()
        if lower not in _LETTERS:
            raise MacroError(f"unknown macro letter {letter!r}")
        if lower in _EXPLANATION_ONLY and not explanation:
            raise MacroError(f"macro %{{{letter}}} is only allowed in explanations")
        tokens.append(_Macro(lower, letter != lower, _keep(digits), bool(reverse), delimiters))
    tail = text[position:]
    if "%" in tail:
        raise MacroError("a lone % must be written %%")
    if tail:
        tokens.append(tail)
    return MacroString(tuple(tokens), tail)


def _ip_macro(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if ip.version == 4:
        return str(ip)
    # RFC 7208 7.3 "dot-format": one nibble per label, lower case as in its 7.4 example.
    return ".".join(ip.exploded.replace(":", ""))


def _letter(letter: str, context: MacroContext) -> str:
    local, _, sender_domain = context.sender.rpartition("@")
    match letter:
        case "s":
            return context.sender
        case "l":
            return local or "postmaster"
        case "o":
            return sender_domain
        case "d":
            return context.domain
        case "i":
            return _ip_macro(context.ip)
        case "p":
            return context.validated_name() if context.validated_name else "unknown"
        case "v":
            return "in-addr" if context.ip.version == 4 else "ip6"
        case "h":
            return context.helo
        case "c":
            return str(context.ip)  # RFC 5952 text form: lower case, zeros compressed
        case "r":
            return context.receiver
        case _:  # "t"
            return str(int(time.time()))


def _value(token: str | _Macro, context: MacroContext) -> str:
    if isinstance(token, str):
        return token
    value = _letter(token.letter, context)
    if token.keep or token.reverse or token.delimiters:
        parts = re.split("[" + re.escape(token.delimiters or ".") + "]", value)
        if token.reverse:
            parts.reverse()
        if token.keep:
            parts = parts[-token.keep :]
        value = ".".join(parts)
    if token.escape:
        value = urllib.parse.quote(value, safe="-._~")
    return value


def _parsed(
    text: str | MacroString, explanation: bool, deadline: float | None = None
) -> MacroString:
    if isinstance(text, MacroString):
        return text
    return parse_macro_string(text, explanation=explanation, deadline=deadline)


def expand(
    text: str | MacroString,
    context: MacroContext,
    *,
    explanation: bool = False,
    limit: int | None = None,
    deadline: float | None = None,
) -> str:
    """Expand every macro, left to right; stop after `limit` characters.

    Raises `MacroError` on invalid syntax, `MacroTimeout` past `deadline`
    (a `time.monotonic()` value).
    """
    out: list[str] = []
    size = 0
    for count, token in enumerate(_parsed(text, explanation, deadline).tokens, start=1):
        _check_deadline(deadline, count)
        value = _value(token, context)
        out.append(value)
        size += len(value)
        if limit is not None and size >= limit:
            return "".join(out)[:limit]
    return "".join(out)


def truncate_domain(name: str) -> str:
    """RFC 7208 7.3: drop labels from the left until `name` fits in 253 characters.

    In one pass: the result is the longest suffix that starts a label and fits.
    A last label longer than that is all that remains (and names nothing).
    """
    name = name.rstrip(".")
    if len(name) <= MAX_DOMAIN_LENGTH:
        return name
    dot = name.find(".", len(name) - MAX_DOMAIN_LENGTH - 1)
    return name[dot + 1 :] if dot >= 0 else name[name.rfind(".") + 1 :]


def expand_domain(
    text: str | MacroString, context: MacroContext, *, deadline: float | None = None
) -> str:
    """Expand a domain-spec for a DNS query, truncated as RFC 7208 7.3 says.

    Works from the right and stops once more than 254 characters are known,
    so neither time nor memory grows with how long the full expansion would be
    (macros further left, `%{p}` included, are never evaluated).
    """
    pieces: list[str] = []
    size = 0
    for count, token in enumerate(reversed(_parsed(text, False, deadline).tokens), start=1):
        _check_deadline(deadline, count)
        value = _value(token, context)
        if not pieces:
            value = value.rstrip(".")  # trailing dots are not part of the name
            if not value:
                continue
        pieces.append(value)
        size += len(value)
        if size > MAX_DOMAIN_LENGTH + 1:
            break
    return truncate_domain("".join(reversed(pieces)))
