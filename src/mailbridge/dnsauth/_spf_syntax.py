"""The terms of an SPF record (RFC 7208 4.6.1, 5, 6, 7.1), checked before any is evaluated."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

import attrs

from ._spf_macros import MacroError, MacroString, parse_macro_string

MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_TERM = re.compile(
    r"^(?P<qualifier>[-+~?]?)(?P<name>[A-Za-z][A-Za-z0-9\-_.]*)"
    r"(?:(?P<sep>[:=])(?P<value>.*?))?(?P<cidr>(?:/\d+)?(?://\d+)?)\Z",
    re.DOTALL,
)
_MODIFIER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-_.]*\Z")
# toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
_TOPLABEL = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9]")
# ip4-cidr-length / ip6-cidr-length: "0" or up to three digits without a leading zero
_CIDR = "(0|[1-9][0-9]{0,2})"


class SpfSyntaxError(Exception):
    """A record that breaks RFC 7208's grammar (a permerror); the message says where."""


@attrs.frozen
class Directive:
    """One mechanism with its qualifier, as written, and its parsed domain-spec."""

    qualifier: str
    name: str  # lower case
    value: str | None
    cidr: str
    text: str
    spec: MacroString | None = None  # for the mechanisms that take a domain-spec


@attrs.frozen
class ParsedRecord:
    """The mechanisms in order, and the redirect= and exp= domain-specs."""

    directives: tuple[Directive, ...]
    redirect: MacroString | None
    exp: MacroString | None


def macro_string(text: str, deadline: float) -> MacroString:
    """A term's macro-string, parsed."""
    try:
        return parse_macro_string(text, deadline=deadline)
    except MacroError as exc:
        raise SpfSyntaxError(str(exc)) from None


def domain_spec(spec: str, deadline: float) -> MacroString:
    """A parsed domain-spec: a macro-string ending in a macro or "." toplabel ["."] (7.1)."""
    parsed = macro_string(spec, deadline)
    if not parsed.ends_with_macro:
        tail = parsed.tail[:-1] if parsed.tail.endswith(".") else parsed.tail
        _, dot, toplabel = tail.rpartition(".")
        if not dot or not _TOPLABEL.fullmatch(toplabel):
            raise SpfSyntaxError(f"{spec!r} is not a valid domain-spec")
    return parsed


def cidr_lengths(text: str) -> tuple[int, int]:
    """The IPv4 and IPv6 prefix lengths of a dual-cidr-length ("/24//64")."""
    v4, v6 = 32, 128
    if text:
        match = re.fullmatch(f"(?:/{_CIDR})?(?://{_CIDR})?", text)
        if not match:
            raise SpfSyntaxError(f"invalid CIDR length {text!r}")
        if match.group(1):
            v4 = int(match.group(1))
        if match.group(2):
            v6 = int(match.group(2))
        if v4 > 32 or v6 > 128:
            raise SpfSyntaxError(f"invalid CIDR length {text!r}")
    return v4, v6


def parse_terms(
    terms: Sequence[str], *, deadline: float, check_deadline: Callable[[], None]
) -> ParsedRecord:
    """Every term of a record (after "v=spf1"), checked: all must be valid (RFC 7208 4.6)."""
    directives = []
    modifiers: dict[str, MacroString] = {}
    for text in terms:
        check_deadline()
        if not text:
            continue
        match = _TERM.match(text)
        if not match:
            raise SpfSyntaxError(f"invalid term {text!r}")
        qualifier, name, sep, value, cidr = match.group("qualifier", "name", "sep", "value", "cidr")
        lower = name.lower()
        if sep == "=":
            if qualifier or not _MODIFIER_NAME.match(name):
                raise SpfSyntaxError(f"invalid modifier {text!r}")
            value = (value or "") + (cidr or "")
            if lower in ("redirect", "exp"):
                if lower in modifiers:
                    raise SpfSyntaxError(f"{lower}= appears twice")
                if not value:
                    raise SpfSyntaxError(f"{lower}= needs a domain")
                modifiers[lower] = domain_spec(value, deadline)
            else:  # unknown modifiers are ignored, but must be valid macro-strings
                macro_string(value, deadline)
            continue
        if lower not in MECHANISMS:
            raise SpfSyntaxError(f"unknown mechanism {name!r}")
        spec = _mechanism(lower, sep, value, cidr, text, deadline=deadline)
        directives.append(Directive(qualifier, lower, value, cidr, text, spec))
    return ParsedRecord(tuple(directives), modifiers.get("redirect"), modifiers.get("exp"))


def _mechanism(
    name: str, sep: str | None, value: str | None, cidr: str, text: str, *, deadline: float
) -> MacroString | None:
    """Checks one mechanism's arguments; returns its parsed domain-spec, if any."""
    needs_value = name in ("include", "exists", "ip4", "ip6")
    takes_value = name != "all"
    takes_cidr = name in ("a", "mx", "ip4", "ip6")
    if (
        (needs_value and not value)
        or (value is not None and not takes_value)
        or (sep == ":" and not value)
        or (cidr and not takes_cidr)
    ):
        raise SpfSyntaxError(f"invalid mechanism {text!r}")
    if name in ("ip4", "ip6"):
        limit = 32 if name == "ip4" else 128
        match = re.fullmatch(f"(?:/{_CIDR})?", cidr)
        if not match or (match.group(1) and int(match.group(1)) > limit):
            raise SpfSyntaxError(f"invalid CIDR length in {text!r}")
        try:
            address = ipaddress.ip_address(value or "")
        except ValueError:
            raise SpfSyntaxError(f"invalid address in {text!r}") from None
        if address.version != (4 if name == "ip4" else 6):
            raise SpfSyntaxError(f"invalid address in {text!r}")
        return None
    if cidr:
        cidr_lengths(cidr)  # a / mx: dual-cidr-length, checked before anything is evaluated
    # Macros must be valid everywhere in the record (RFC 7208 4.6), not just in the
    # terms that get evaluated: parsed here, once.
    return None if value is None else domain_spec(value, deadline)
