"""Provider value classes and their validation: `Endpoint`, `OAuth2Info`, `SendingLimits`,
`Provider`, `expand`."""

from __future__ import annotations

import fnmatch
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import idna

from ..errors import ConfigurationError
from ..settings import Security
from ._oauth_info import Milestone, OAuth2Info, to_strings

UsernameForm = Literal["address", "local_part"]
"""What a provider expects as user name: the whole address or the part before the ``@``."""
AuthMethod = Literal["password", "app_password", "oauth2"]
"""How a tenant can log in: the mailbox password, a separate app password, or OAuth2."""

USERNAME_FORMS: tuple[UsernameForm, ...] = ("address", "local_part")
AUTH_METHODS: tuple[AuthMethod, ...] = ("password", "app_password", "oauth2")
PLACEHOLDERS = ("%EMAILADDRESS%", "%EMAILLOCALPART%", "%EMAILDOMAIN%", "%MXHOST%")
"""Placeholders a host name may contain; see `expand`."""

_PLACEHOLDER = re.compile(r"%[A-Z]+%")
_ID = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62})")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


# ---------------------------------------------------------------------------
# Names


def normalize_domain(domain: str) -> str:
    """A domain or host name in the form used for look-ups.

    Lower case, without surrounding blanks or a trailing dot (as DNS answers carry
    them), internationalised labels converted to their ASCII ``xn--`` form
    (UTS #46 / IDNA 2008). Raises `ConfigurationError` (field ``domain``) when the
    text cannot be a domain name.
    """
    if not isinstance(domain, str):
        raise ConfigurationError("domain", f"{domain!r} is not a domain name")
    text = domain.strip().rstrip(".").lower()
    if not text:
        raise ConfigurationError("domain", "the domain name is empty")
    if text.isascii():
        ascii_name = text
    else:
        try:
            ascii_name = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise ConfigurationError(
                "domain", f"{domain!r} is not a valid internationalised domain name: {error}"
            ) from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigurationError("domain", f"{domain!r} is not a valid domain name")
    return ascii_name


def _split_address(email: str) -> tuple[str, str]:
    if not isinstance(email, str) or email.count("@") < 1:
        raise ConfigurationError("email", f"{email!r} is not an email address")
    local, _, domain = email.strip().rpartition("@")
    if not local or not domain:
        raise ConfigurationError("email", f"{email!r} is not an email address")
    return local, domain


def expand(host: str, email: str, *, mx_host: str | None = None) -> str:
    """Fill the placeholders of a host name (or any template) for one address.

    ``%EMAILADDRESS%`` becomes the whole address, ``%EMAILLOCALPART%`` the part
    before the last ``@``, ``%EMAILDOMAIN%`` the domain (normalised: lower case,
    IDNA ASCII form) and ``%MXHOST%`` the given `mx_host` (normalised), for hosters
    whose mail server is the same per-account machine their MX record names.

    >>> expand("mail.%EMAILDOMAIN%", "Anna@Example.COM")
    'mail.example.com'

    Raises `ConfigurationError` for an unknown placeholder, or ``%MXHOST%``
    without `mx_host`.
    """
    if "%" not in host:
        return host
    local, domain = _split_address(email)

    def replace(match: re.Match[str]) -> str:
        name = match.group(0)
        if name == "%EMAILADDRESS%":
            return f"{local}@{domain}"
        if name == "%EMAILLOCALPART%":
            return local
        if name == "%EMAILDOMAIN%":
            return normalize_domain(domain)
        if name == "%MXHOST%":
            if mx_host is None:
                raise ConfigurationError(
                    "host", f"{host!r} names the MX host, but no MX host is known for {domain}"
                )
            return normalize_domain(mx_host)
        raise ConfigurationError(
            "host", f"unknown placeholder {name} in {host!r}; use one of {', '.join(PLACEHOLDERS)}"
        )

    return _PLACEHOLDER.sub(replace, host)


def _check_template(host: str) -> None:
    for name in _PLACEHOLDER.findall(host):
        if name not in PLACEHOLDERS:
            raise ConfigurationError(
                "host", f"unknown placeholder {name}; use one of {', '.join(PLACEHOLDERS)}"
            )
    sample = _PLACEHOLDER.sub("x", host)
    if sample.count("%"):
        raise ConfigurationError("host", f"{host!r} has an unterminated placeholder")
    if sample in _LOOPBACK:
        return
    try:
        normalize_domain(sample)
    except ConfigurationError:
        raise ConfigurationError("host", f"{host!r} is not a host name") from None


# ---------------------------------------------------------------------------
# Values


def _to_security(value: Security | str) -> Security:
    return Security.parse(value)


def _check_port(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigurationError("port", f"{value!r} is not a port number (1-65535)")


def _check_host(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("host", "the server host name is empty")
    _check_template(value)


def _check_username(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value not in USERNAME_FORMS:
        raise ConfigurationError(
            "username", f"{value!r} is not one of {', '.join(map(repr, USERNAME_FORMS))}"
        )


@attrs.frozen
class Endpoint:
    """One way to reach a provider's SMTP or IMAP server.

    `host` may contain the placeholders of `expand` (``mail.%EMAILDOMAIN%``);
    `username` says whether the login is the whole address or its local part.
    """

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_check_port)
    security: Security = attrs.field(converter=_to_security)
    username: UsernameForm = attrs.field(default="address", validator=_check_username)

    @property
    def uses_tls(self) -> bool:
        """True unless the connection is unencrypted (`Security.NONE`)."""
        return self.security is not Security.NONE

    @property
    def is_template(self) -> bool:
        """True when `host` contains a placeholder and must be expanded per address."""
        return "%" in self.host

    @property
    def is_local(self) -> bool:
        """True for a server on this machine (such as Proton Mail Bridge)."""
        return self.host in _LOOPBACK

    def host_for(self, email: str, *, mx_host: str | None = None) -> str:
        """The host name for this address, placeholders filled (see `expand`)."""
        return expand(self.host, email, mx_host=mx_host)

    def username_for(self, email: str) -> str:
        """The user name to log in with for this address."""
        local, domain = _split_address(email)
        return local if self.username == "local_part" else f"{local}@{domain}"


def _limit(field: str) -> Any:
    def check(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigurationError(field, f"{value!r} is not a positive whole number")

    return check


@attrs.frozen
class SendingLimits:
    """A provider's published sending limits for one mailbox; `source` is where they come from.

    `per_minute` and `per_day` count messages; `per_minute_recipients` and
    `per_day_recipients` count recipients (a message to 3 addresses uses 3), as
    Microsoft 365's 10,000 recipients a day does; a window may have both (Google
    Workspace: 2,000 messages and 10,000 recipients a day). `connections` bounds the
    SMTP connections sending at once. None where the provider publishes no figure.
    The outbox enforces them per tenant across all its workers.
    """

    per_minute: int | None = attrs.field(default=None, validator=_limit("limits.per_minute"))
    per_day: int | None = attrs.field(default=None, validator=_limit("limits.per_day"))
    connections: int | None = attrs.field(default=None, validator=_limit("limits.connections"))
    source: str | None = None
    per_minute_recipients: int | None = attrs.field(
        default=None, validator=_limit("limits.per_minute_recipients"), kw_only=True
    )
    per_day_recipients: int | None = attrs.field(
        default=None, validator=_limit("limits.per_day_recipients"), kw_only=True
    )


def _domain_names(field: str, values: Iterable[str]) -> tuple[str, ...]:
    """`values` as a tuple of normalized domain names; errors name `field`."""
    if isinstance(values, str):
        raise ConfigurationError(field, "must be a list of domain names")
    try:
        return tuple(normalize_domain(value) for value in values)
    except ConfigurationError as error:
        raise ConfigurationError(field, error.problem) from None


def _to_domains(values: Iterable[str]) -> tuple[str, ...]:
    return _domain_names("domains", values)


def _to_aliases(values: Iterable[str]) -> tuple[str, ...]:
    return _domain_names("server_aliases", values)


def _to_patterns(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ConfigurationError("mx_patterns", "must be a list of host names or patterns")
    patterns = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigurationError("mx_patterns", f"{value!r} is not a host pattern")
        text = value.strip().rstrip(".").lower()
        literal = text.replace("*", "x").replace("?", "x")
        try:
            normalize_domain(literal)
        except ConfigurationError:
            raise ConfigurationError("mx_patterns", f"{value!r} is not a host pattern") from None
        patterns.append(text)
    return tuple(patterns)


def _to_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value or {}))


def _endpoint_tuple(values: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(values)


@attrs.frozen
class Provider:
    """A mail provider: its address domains, how to recognise it by MX, its servers, its quirks.

    `auth` lists the ways to log in: ``"password"`` (the mailbox password),
    ``"app_password"`` (a separate app password is *required*; the normal password
    is refused) and ``"oauth2"`` (see `oauth2`). `files_sent_copy` is true when the
    server itself files every submitted message in Sent, so mailbridge must not
    archive another copy. `server_aliases` are other names of the provider's servers
    (``smtp.googlemail.com``): they recognise a host a tenant typed, and are never
    offered by discovery. `hints` are short sentences for diagnostics; `docs` maps
    a topic (``app_passwords``, ``smtp_auth``, ``imap``, ``spf``, ``settings``) to
    the provider's own help page; `notes` records what is uncertain about the data;
    `timeline` dates the provider's announced changes to how one logs in (Microsoft
    365's retirement of passwords for SMTP).
    """

    id: str = attrs.field()
    name: str = attrs.field()
    smtp: tuple[Endpoint, ...] = attrs.field(converter=_endpoint_tuple)
    imap: tuple[Endpoint, ...] = attrs.field(default=(), converter=_endpoint_tuple)
    domains: tuple[str, ...] = attrs.field(default=(), converter=_to_domains)
    mx_patterns: tuple[str, ...] = attrs.field(default=(), converter=_to_patterns)
    auth: tuple[AuthMethod, ...] = attrs.field(default=("password",), converter=to_strings)
    oauth2: OAuth2Info | None = attrs.field(default=None)
    files_sent_copy: bool = attrs.field(default=False)
    sent_folder: str | None = attrs.field(default=None)
    server_aliases: tuple[str, ...] = attrs.field(default=(), converter=_to_aliases)
    docs: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping, hash=False)
    hints: tuple[str, ...] = attrs.field(default=(), converter=to_strings)
    notes: str | None = None
    timeline: tuple[Milestone, ...] = attrs.field(default=(), converter=tuple)
    limits: SendingLimits | None = None

    @id.validator
    def _check_id(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise ConfigurationError(
                "id", f"{value!r} is not an id (lower-case letters, digits, '-' and '_')"
            )

    @name.validator
    def _check_name(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError("name", "the provider name is empty")

    @smtp.validator
    def _check_smtp(
        self, _: attrs.Attribute[tuple[Endpoint, ...]], value: tuple[Endpoint, ...]
    ) -> None:
        _check_endpoints("smtp", value)
        if not value:
            raise ConfigurationError("smtp", "give at least one SMTP endpoint")
        if not any(endpoint.uses_tls for endpoint in value):
            raise ConfigurationError("smtp", "give at least one SMTP endpoint with TLS")

    @imap.validator
    def _check_imap(
        self, _: attrs.Attribute[tuple[Endpoint, ...]], value: tuple[Endpoint, ...]
    ) -> None:
        _check_endpoints("imap", value)

    @domains.validator
    def _check_domains(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        seen = set()
        for domain in value:
            if domain in seen:
                raise ConfigurationError("domains", f"{domain!r} is listed twice")
            seen.add(domain)

    @auth.validator
    def _check_auth(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        if not value:
            raise ConfigurationError("auth", "give at least one authentication method")
        for method in value:
            if method not in AUTH_METHODS:
                raise ConfigurationError(
                    "auth", f"{method!r} is not one of {', '.join(map(repr, AUTH_METHODS))}"
                )
        if "password" in value and "app_password" in value:
            raise ConfigurationError(
                "auth",
                "'app_password' means the mailbox password is refused; "
                "do not list 'password' as well (put optional app passwords in hints)",
            )
        if len(set(value)) != len(value):
            raise ConfigurationError("auth", "a method is listed twice")

    @oauth2.validator
    def _check_oauth2(
        self, _: attrs.Attribute[OAuth2Info | None], value: OAuth2Info | None
    ) -> None:
        if value is not None and not isinstance(value, OAuth2Info):
            raise ConfigurationError("oauth2", "must be an OAuth2Info")

    @files_sent_copy.validator
    def _check_files_sent_copy(self, _: attrs.Attribute[bool], value: bool) -> None:
        if not isinstance(value, bool):
            raise ConfigurationError("files_sent_copy", f"{value!r} is not true or false")

    @sent_folder.validator
    def _check_sent_folder(self, _: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigurationError("sent_folder", "give a folder name or leave it out")

    @docs.validator
    def _check_docs(self, _: attrs.Attribute[Mapping[str, str]], value: Mapping[str, str]) -> None:
        for topic, url in value.items():
            if not isinstance(url, str) or not url.startswith("https://"):
                raise ConfigurationError(f"docs.{topic}", f"{url!r} is not an https:// link")

    @hints.validator
    def _check_hints(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        if not all(isinstance(hint, str) and hint.strip() for hint in value):
            raise ConfigurationError("hints", "every hint must be non-empty text")

    @timeline.validator
    def _check_timeline(
        self, _: attrs.Attribute[tuple[Milestone, ...]], value: tuple[Milestone, ...]
    ) -> None:
        if not all(isinstance(step, Milestone) for step in value):
            raise ConfigurationError("timeline", "every step must be a Milestone")
        if [step.date for step in value] != sorted(step.date for step in value):
            raise ConfigurationError("timeline", "list the steps in date order")

    def __attrs_post_init__(self) -> None:
        if "oauth2" in self.auth and self.oauth2 is None:
            raise ConfigurationError("oauth2", "'oauth2' is in auth, so give the issuer and scopes")

    @property
    def requires_app_password(self) -> bool:
        """True when the mailbox password is refused and an app password is needed."""
        return "app_password" in self.auth

    @property
    def supports_oauth2(self) -> bool:
        """True when the provider accepts OAuth2 (XOAUTH2) logins."""
        return "oauth2" in self.auth

    def mx_specificity(self, mx_host: str) -> tuple[int, int] | None:
        """How specifically one of `mx_patterns` matches `mx_host`, or None.

        A pattern without wildcards matches that host and every host below it
        (``aspmx.l.google.com`` matches ``alt1.aspmx.l.google.com``); a pattern with
        ``*`` or ``?`` is a glob matched against the whole host name. The result
        orders matches: exact hosts first, then by the number of literal labels and
        characters in the pattern.
        """
        host = normalize_domain(mx_host)
        best: tuple[int, int] | None = None
        for pattern in self.mx_patterns:
            score = _pattern_score(pattern, host)
            if score is not None and (best is None or score > best):
                best = score
        return best


def _check_endpoints(kind: str, endpoints: tuple[Endpoint, ...]) -> None:
    for index, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, Endpoint):
            raise ConfigurationError(f"{kind}[{index}]", "must be an Endpoint")
        if endpoint.security is Security.NONE and not endpoint.is_local:
            raise ConfigurationError(
                f"{kind}[{index}].security",
                "an unencrypted endpoint is only allowed on this machine (127.0.0.1)",
            )


def _pattern_score(pattern: str, host: str) -> tuple[int, int] | None:
    literal_labels = sum(1 for label in pattern.split(".") if "*" not in label and "?" not in label)
    literal_chars = len(pattern.replace("*", "").replace("?", ""))
    if "*" in pattern or "?" in pattern:
        if fnmatch.fnmatchcase(host, pattern):
            return (literal_labels, literal_chars)
        return None
    if host == pattern:
        return (literal_labels + 1, literal_chars)
    if host.endswith("." + pattern):
        return (literal_labels, literal_chars)
    return None
