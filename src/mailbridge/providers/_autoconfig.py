"""Thunderbird autoconfig documents (clientConfig v1.1), parsed as untrusted input.

`parse_autoconfig` turns the XML served at
``https://autoconfig.<domain>/mail/config-v1.1.xml`` into `AutoconfigCandidate`
values, one per usable server, in document order. The XML is parsed with
defusedxml with DTDs, entities and external references refused, and every
problem with the document surfaces as `AutoconfigError`.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Literal

import attrs
import email_validator
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from ..errors import AutoconfigError
from ..settings import Security

__all__ = [
    "MAX_DOCUMENT_SIZE",
    "MAX_OAUTH2_SCOPES",
    "AutoconfigAuthMethod",
    "AutoconfigCandidate",
    "AutoconfigError",
    "OAuth2Config",
    "ServerProtocol",
    "parse_autoconfig",
]

MAX_DOCUMENT_SIZE = 512 * 1024
"""Default size limit in bytes; real documents are a few kilobytes."""
MAX_OAUTH2_SCOPES = 16
"""An `<oAuth2>` block with more scopes than this is not used (real ones have two or three)."""
MAX_OAUTH2_URL = 2048
_MAX_SCOPE = 256

ServerProtocol = Literal["smtp", "imap", "pop3"]
AutoconfigAuthMethod = Literal["password", "password-encrypted", "oauth2", "client-ip", "none"]

_PROTOCOLS: dict[str, dict[str, ServerProtocol]] = {
    "incomingserver": {"imap": "imap", "pop3": "pop3"},
    "outgoingserver": {"smtp": "smtp"},
}
_SOCKET_TYPES = {
    "ssl": Security.IMPLICIT_TLS,
    "starttls": Security.STARTTLS,
    "plain": Security.NONE,
}
# Thunderbird's names, the legacy "plain"/"secure", and bare SASL names some files use.
_AUTH_METHODS: dict[str, AutoconfigAuthMethod] = {
    "password-cleartext": "password",
    "plain": "password",
    "login": "password",
    "password-encrypted": "password-encrypted",
    "secure": "password-encrypted",
    "cram-md5": "password-encrypted",
    "oauth2": "oauth2",
    "xoauth2": "oauth2",
    "client-ip-address": "client-ip",
    "none": "none",
}
# %EMAILADDRESS (no closing %) is a quirk of real files; the closing % is optional.
_PLACEHOLDER = re.compile(r"%(EMAILADDRESS|EMAILLOCALPART|EMAILDOMAIN)%?", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@attrs.frozen
class OAuth2Config:
    """The `<oAuth2>` block: who issues tokens, for which scopes, at which https URLs."""

    issuer: str
    scopes: tuple[str, ...]
    auth_url: str
    token_url: str


@attrs.frozen
class AutoconfigCandidate:
    """One server offered by the document, placeholders expanded, host validated.

    `auth_methods` holds the recognised methods in document order (unknown ones such
    as NTLM or GSSAPI are left out); `username` is None when the document gives none.
    """

    protocol: ServerProtocol
    host: str
    port: int
    security: Security
    username: str | None
    auth_methods: tuple[AutoconfigAuthMethod, ...]
    provider_id: str | None
    display_name: str | None
    documentation: tuple[str, ...] = ()
    oauth2: OAuth2Config | None = None


def parse_autoconfig(
    document: bytes | str, email: str, *, max_size: int = MAX_DOCUMENT_SIZE
) -> list[AutoconfigCandidate]:
    """The usable servers of a clientConfig v1.1 `document`, for the address `email`.

    Servers with an unknown type or socketType, a bad port, or a host name that is
    not one after expansion are skipped. Raises `AutoconfigError` when `email` is not
    an address, the document is over `max_size` bytes, is not well-formed XML, holds a
    DTD or entities, is not a clientConfig, or offers no usable server at all.
    """
    values, host_values = _address_values(email)
    root = _parse(document, max_size)
    if _name(root) != "clientconfig":
        raise AutoconfigError(f"the root element is {_short(_name(root))}, not clientConfig")
    providers = _children(root, "emailProvider")
    if not providers:
        raise AutoconfigError("the document has no emailProvider")
    provider = providers[0]
    provider_id = _clean(provider.get("id"))
    name = _text(provider, "displayName") or _text(provider, "displayShortName")
    display_name = _expand(name, values) if name is not None else None
    documentation = tuple(
        dict.fromkeys(
            url
            for element in _children(provider, "documentation")
            if (url := _url(element.get("url"), ("https", "http"))) is not None
        )
    )
    oauth2 = next(
        (
            config
            for element in _children(root, "oAuth2") + _children(provider, "oAuth2")
            if (config := _oauth2(element)) is not None
        ),
        None,
    )
    candidates = [
        attrs.evolve(
            server,
            provider_id=provider_id,
            display_name=display_name,
            documentation=documentation,
            oauth2=oauth2,
        )
        for element in provider
        if (server := _server(element, values, host_values)) is not None
    ]
    if not candidates:
        raise AutoconfigError("the document offers no usable incoming or outgoing server")
    return candidates


def _address_values(email: str) -> tuple[dict[str, str], dict[str, str]]:
    """Placeholder values for user names, and for host names (IDNA domain)."""
    if not isinstance(email, str):
        raise AutoconfigError(f"{email!r} is not an email address")
    try:
        valid = email_validator.validate_email(
            email.strip(),
            check_deliverability=False,
            allow_quoted_local=False,
            test_environment=True,  # RFC 2606 ".test" stays usable, as in _addresses.py
        )
    except email_validator.EmailNotValidError as exc:
        raise AutoconfigError(f"{_short(email)} is not an email address: {exc}") from None
    values = {
        "EMAILADDRESS": valid.normalized,
        "EMAILLOCALPART": valid.local_part,
        "EMAILDOMAIN": valid.domain,
    }
    return values, {**values, "EMAILDOMAIN": valid.ascii_domain}


def _parse(document: bytes | str, max_size: int) -> ET.Element:
    """Parse with defusedxml after the size check; any failure is an `AutoconfigError`."""
    if not isinstance(document, (bytes, str)):
        raise TypeError("an autoconfig document is bytes or str")
    if len(document) > max_size or (
        isinstance(document, str) and len(document.encode("utf-8", "replace")) > max_size
    ):
        raise AutoconfigError(f"the document is larger than {max_size} bytes")
    try:
        root: ET.Element = SafeET.fromstring(
            document, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise AutoconfigError(f"refused unsafe XML: {type(exc).__name__}") from None
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise AutoconfigError(f"the document is not well-formed XML: {exc}") from None
    return root


def _server(
    element: ET.Element, values: Mapping[str, str], host_values: Mapping[str, str]
) -> AutoconfigCandidate | None:
    """The server described by `element` (no provider fields yet); None to skip it."""
    protocol = _PROTOCOLS.get(_name(element), {}).get((element.get("type") or "").strip().lower())
    host = _host(_expand(_text(element, "hostname") or "", host_values))
    port_text = _text(element, "port") or ""
    port = int(port_text) if re.fullmatch(r"[0-9]{1,5}", port_text) else 0
    security = _SOCKET_TYPES.get((_text(element, "socketType") or "").lower())
    if protocol is None or host is None or security is None or not 1 <= port <= 65535:
        return None
    username = _text(element, "username", collapse=False)
    if username is not None:
        username = _expand(username, values)
        if not username.isprintable():  # a line break, tab or control character
            return None
    names = ((_clean(e.text) or "").lower() for e in _children(element, "authentication"))
    auth = tuple(dict.fromkeys(_AUTH_METHODS[n] for n in names if n in _AUTH_METHODS))
    return AutoconfigCandidate(protocol, host, port, security, username, auth, None, None)


def _host(text: str) -> str | None:
    """The host name or IP address in `text`, lower-case ASCII; None when it is neither."""
    host = text.strip().rstrip(".").lower()
    if "%" in host:  # an unknown placeholder, or an IPv6 zone index
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return None if labels[-1].isdigit() else host  # "10.1" is no name, and no valid IP


def _oauth2(element: ET.Element) -> OAuth2Config | None:
    """The OAuth2 settings, or None when the block lacks a field or is not safe to use.

    The issuer must be a host name; both URLs https on a host name (no IP literal,
    no user name or password in the URL, at most `MAX_OAUTH2_URL` characters); the
    scopes, at most `MAX_OAUTH2_SCOPES` of them, each a printable word.
    """
    issuer = _host(_text(element, "issuer") or "")
    auth_url = _oauth2_url(_text(element, "authURL"))
    token_url = _oauth2_url(_text(element, "tokenURL"))
    if issuer is None or _is_ip(issuer) or auth_url is None or token_url is None:
        return None
    words = (_text(element, "scope") or "")[: MAX_OAUTH2_SCOPES * (_MAX_SCOPE + 1)].split()
    scopes = tuple(dict.fromkeys(words))
    if (
        not scopes
        or len(scopes) > MAX_OAUTH2_SCOPES
        or not all(len(scope) <= _MAX_SCOPE and scope.isprintable() for scope in scopes)
    ):
        return None
    return OAuth2Config(issuer, scopes, auth_url, token_url)


def _oauth2_url(text: str | None) -> str | None:
    url = _url(text, ("https",))
    if url is None or len(url) > MAX_OAUTH2_URL:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return None
    host = _host(parts.hostname or "")
    return url if host is not None and not _is_ip(host) else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _url(text: str | None, schemes: tuple[str, ...]) -> str | None:
    """`text` when it is an absolute URL with one of `schemes` and no space or control."""
    url = (text or "").strip()
    if not url.isprintable() or any(char.isspace() for char in url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in schemes and parts.hostname else None


def _expand(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1).upper()], text)


def _name(element: ET.Element) -> str:
    """The element's local name, lower-cased (namespaces and case are tolerated)."""
    return element.tag.rpartition("}")[2].lower() if isinstance(element.tag, str) else ""


def _children(parent: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in parent if _name(child) == name.lower()]


def _text(parent: ET.Element, name: str, *, collapse: bool = True) -> str | None:
    """The first non-empty text of a `name` child, stripped (inner whitespace collapsed)."""
    return next((t for c in _children(parent, name) if (t := _clean(c.text, collapse))), None)


def _clean(text: str | None, collapse: bool = True) -> str | None:
    if text is None:
        return None
    return (" ".join(text.split()) if collapse else text.strip()) or None


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
