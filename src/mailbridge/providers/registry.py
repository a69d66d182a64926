"""Known mail providers: where their servers are and what to tell a tenant when login fails.

The built-in presets live in ``providers.toml`` next to this module and are loaded
(and validated) once, on first use of `ProviderRegistry.default()`::

    registry = ProviderRegistry.default()
    gmail = registry.by_domain("GMail.com")           # case-insensitive, IDNA-normalised
    workspace = registry.by_mx("alt1.aspmx.l.google.com.")
    endpoint = gmail.smtp[0]
    endpoint.host_for("anna@gmail.com"), endpoint.port, endpoint.username_for("anna@gmail.com")

Registries are immutable: `register`, `load` and `load_toml` return a *new* registry,
so an application can add its own presets without changing the default for anybody else.

Every problem in a data file raises `ConfigurationError`, whose ``field`` names the
provider and the field (``providers.gmail.smtp[0].port``) and whose text names the file.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import tomllib
import types
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import idna

from ..errors import ConfigurationError
from ..settings import Security

__all__ = [
    "AUTH_METHODS",
    "PLACEHOLDERS",
    "USERNAME_FORMS",
    "AuthMethod",
    "Endpoint",
    "OAuth2Info",
    "Provider",
    "ProviderRegistry",
    "UsernameForm",
    "expand",
    "normalize_domain",
]

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
_SCHEMA_VERSION = 1


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


def _to_strings(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(values)


@attrs.frozen
class OAuth2Info:
    """Where OAuth2 tokens for a provider come from: the issuer and the scopes mail needs."""

    issuer: str = attrs.field()
    scopes: tuple[str, ...] = attrs.field(converter=_to_strings)

    @issuer.validator
    def _check_issuer(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError("issuer", "the OAuth2 issuer is empty")

    @scopes.validator
    def _check_scopes(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        if not value or not all(isinstance(scope, str) and scope for scope in value):
            raise ConfigurationError("scopes", "give at least one non-empty OAuth2 scope")


def _to_domains(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ConfigurationError("domains", "must be a list of domain names")
    try:
        return tuple(normalize_domain(value) for value in values)
    except ConfigurationError as error:
        raise ConfigurationError("domains", error.problem) from None


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
    archive another copy. `hints` are short sentences for diagnostics; `docs` maps
    a topic (``app_passwords``, ``smtp_auth``, ``imap``, ``spf``, ``settings``) to
    the provider's own help page; `notes` records what is uncertain about the data.
    """

    id: str = attrs.field()
    name: str = attrs.field()
    smtp: tuple[Endpoint, ...] = attrs.field(converter=_endpoint_tuple)
    imap: tuple[Endpoint, ...] = attrs.field(default=(), converter=_endpoint_tuple)
    domains: tuple[str, ...] = attrs.field(default=(), converter=_to_domains)
    mx_patterns: tuple[str, ...] = attrs.field(default=(), converter=_to_patterns)
    auth: tuple[AuthMethod, ...] = attrs.field(default=("password",), converter=_to_strings)
    oauth2: OAuth2Info | None = attrs.field(default=None)
    files_sent_copy: bool = attrs.field(default=False)
    sent_folder: str | None = attrs.field(default=None)
    docs: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping, hash=False)
    hints: tuple[str, ...] = attrs.field(default=(), converter=_to_strings)
    notes: str | None = None

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


# ---------------------------------------------------------------------------
# Reading data files

_PROVIDER_KEYS = {
    "id",
    "name",
    "domains",
    "mx_patterns",
    "smtp",
    "imap",
    "auth",
    "oauth2",
    "files_sent_copy",
    "sent_folder",
    "docs",
    "hints",
    "notes",
}
_ENDPOINT_KEYS = {"host", "port", "security", "username"}
_OAUTH2_KEYS = {"issuer", "scopes"}


class _Reader:
    """Turns the parsed TOML of one file into providers, naming the place of every problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> ConfigurationError:
        return ConfigurationError(field, f"{problem} (in {self.source})")

    def read(self, data: Mapping[str, Any]) -> tuple[Provider, ...]:
        unknown = set(data) - {"schema", "provider"}
        if unknown:
            raise self.fail("providers", f"unknown top-level keys: {', '.join(sorted(unknown))}")
        version = data.get("schema", _SCHEMA_VERSION)
        if version != _SCHEMA_VERSION:
            raise self.fail("schema", f"version {version!r} is not supported (only 1)")
        entries = data.get("provider", [])
        if not isinstance(entries, list):
            raise self.fail("provider", "must be an array of tables: [[provider]]")
        providers: list[Provider] = []
        ids: set[str] = set()
        owners: dict[str, str] = {}
        for index, entry in enumerate(entries):
            provider = self.provider(index, entry)
            prefix = f"providers.{provider.id}"
            if provider.id in ids:
                raise self.fail(f"{prefix}.id", f"provider {provider.id!r} is defined twice")
            ids.add(provider.id)
            for domain in provider.domains:
                if domain in owners:
                    raise self.fail(
                        f"{prefix}.domains",
                        f"provider {provider.id!r}: domain {domain!r} already belongs to "
                        f"provider {owners[domain]!r}",
                    )
                owners[domain] = provider.id
            providers.append(provider)
        return tuple(providers)

    def provider(self, index: int, entry: object) -> Provider:
        if not isinstance(entry, dict):
            raise self.fail(f"provider[{index}]", "must be a table")
        raw_id = entry.get("id")
        label = raw_id if isinstance(raw_id, str) and raw_id else f"#{index + 1}"
        prefix = f"providers.{label}"
        who = f"provider {label!r}"
        unknown = set(entry) - _PROVIDER_KEYS
        if unknown:
            raise self.fail(prefix, f"{who}: unknown keys: {', '.join(sorted(unknown))}")
        for key in ("id", "name", "smtp"):
            if key not in entry:
                raise self.fail(f"{prefix}.{key}", f"{who}: {key!r} is missing")
        self.expect(entry, prefix, who, "name", str)
        self.expect(entry, prefix, who, "notes", str)
        self.expect(entry, prefix, who, "sent_folder", str)
        self.expect(entry, prefix, who, "files_sent_copy", bool)
        self.expect(entry, prefix, who, "docs", dict)
        for key in ("domains", "mx_patterns", "auth", "hints"):
            self.expect_strings(entry, prefix, who, key)
        values = dict(entry)
        values["smtp"] = self.endpoints(entry, prefix, who, "smtp")
        values["imap"] = self.endpoints(entry, prefix, who, "imap")
        if "oauth2" in entry:
            values["oauth2"] = self.oauth2(entry["oauth2"], prefix, who)
        try:
            return Provider(**values)
        except ConfigurationError as error:
            raise self.fail(f"{prefix}.{error.field}", f"{who}: {error.problem}") from None

    def expect(self, entry: Mapping[str, Any], prefix: str, who: str, key: str, kind: type) -> None:
        if key in entry and not isinstance(entry[key], kind):
            raise self.fail(
                f"{prefix}.{key}", f"{who}: {entry[key]!r} is not a {_KIND_NAMES[kind]}"
            )

    def expect_strings(self, entry: Mapping[str, Any], prefix: str, who: str, key: str) -> None:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(f"{prefix}.{key}", f"{who}: must be a list of strings")

    def endpoints(
        self, entry: Mapping[str, Any], prefix: str, who: str, kind: str
    ) -> tuple[Endpoint, ...]:
        raw = entry.get(kind, [])
        if not isinstance(raw, list):
            raise self.fail(f"{prefix}.{kind}", f"{who}: must be a list of endpoint tables")
        endpoints = []
        for index, item in enumerate(raw):
            place = f"{prefix}.{kind}[{index}]"
            if not isinstance(item, dict):
                raise self.fail(place, f"{who}: must be a table {{host, port, security}}")
            unknown = set(item) - _ENDPOINT_KEYS
            if unknown:
                raise self.fail(place, f"{who}: unknown keys: {', '.join(sorted(unknown))}")
            for key in ("host", "port", "security"):
                if key not in item:
                    raise self.fail(f"{place}.{key}", f"{who}: {key!r} is missing")
            try:
                endpoints.append(Endpoint(**item))
            except ConfigurationError as error:
                raise self.fail(f"{place}.{error.field}", f"{who}: {error.problem}") from None
        return tuple(endpoints)

    def oauth2(self, raw: object, prefix: str, who: str) -> OAuth2Info:
        place = f"{prefix}.oauth2"
        if not isinstance(raw, dict):
            raise self.fail(place, f"{who}: must be a table {{issuer, scopes}}")
        unknown = set(raw) - _OAUTH2_KEYS
        missing = _OAUTH2_KEYS - set(raw)
        if unknown or missing:
            problem = (
                f"unknown keys: {', '.join(sorted(unknown))}"
                if unknown
                else (f"missing: {', '.join(sorted(missing))}")
            )
            raise self.fail(place, f"{who}: {problem}")
        if not isinstance(raw["scopes"], list):
            raise self.fail(f"{place}.scopes", f"{who}: must be a list of strings")
        try:
            return OAuth2Info(issuer=raw["issuer"], scopes=raw["scopes"])
        except ConfigurationError as error:
            raise self.fail(f"{place}.{error.field}", f"{who}: {error.problem}") from None


_KIND_NAMES: dict[type, str] = {str: "string", bool: "boolean (true/false)", dict: "table"}


def _parse_toml(text: str, source: str) -> tuple[Provider, ...]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError("providers", f"{source} is not valid TOML: {error}") from None
    return _Reader(source).read(data)


def _read_path(path: str | Path) -> tuple[Provider, ...]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError("providers", f"cannot read {file}: {error}") from None
    return _parse_toml(text, str(file))


# ---------------------------------------------------------------------------
# The registry


class ProviderRegistry:
    """An immutable collection of `Provider` presets with look-ups by id, domain and MX host.

    Iterating yields the providers in registration order. `register`, `load` and
    `load_toml` never change a registry; they return a new one, so the shared
    `default()` registry stays as shipped.
    """

    __slots__ = ("_by_domain", "_by_id", "_providers")

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._providers: tuple[Provider, ...] = ()
        self._by_id: dict[str, Provider] = {}
        self._by_domain: dict[str, Provider] = {}
        for provider in providers:
            self._add(provider, replace=False)

    # construction -------------------------------------------------------

    @classmethod
    def default(cls) -> ProviderRegistry:
        """The built-in presets (``providers.toml`` in this package), loaded once and cached."""
        return _default_registry()

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> ProviderRegistry:
        """A registry of only the providers in this TOML text (`source` names it in errors)."""
        return cls(_parse_toml(text, source))

    @classmethod
    def from_file(cls, path: str | Path) -> ProviderRegistry:
        """A registry of only the providers in this TOML file."""
        return cls(_read_path(path))

    def register(self, provider: Provider, *, replace: bool = False) -> ProviderRegistry:
        """A new registry with `provider` added.

        With ``replace=True`` a provider with the same id is replaced (its domains
        are released first); otherwise a duplicate id is an error. A domain that
        another provider already claims is always an error.
        """
        return self._with((provider,), replace=replace)

    def load(self, path: str | Path, *, replace: bool = True) -> ProviderRegistry:
        """A new registry with this one's providers plus those of a TOML file.

        By default a provider in the file replaces the one with the same id, so a
        file can correct a built-in preset.
        """
        return self._with(_read_path(path), replace=replace)

    def load_toml(
        self, text: str, *, source: str = "<string>", replace: bool = True
    ) -> ProviderRegistry:
        """Like `load`, from TOML text."""
        return self._with(_parse_toml(text, source), replace=replace)

    def _with(self, providers: Iterable[Provider], *, replace: bool) -> ProviderRegistry:
        new = ProviderRegistry()
        new._providers = self._providers
        new._by_id = dict(self._by_id)
        new._by_domain = dict(self._by_domain)
        for provider in providers:
            new._add(provider, replace=replace)
        return new

    def _add(self, provider: Provider, *, replace: bool) -> None:
        if not isinstance(provider, Provider):
            raise ConfigurationError("provider", f"{provider!r} is not a Provider")
        old = self._by_id.get(provider.id)
        if old is not None and not replace:
            raise ConfigurationError(
                f"providers.{provider.id}.id", f"provider {provider.id!r} is already registered"
            )
        for domain in provider.domains:
            owner = self._by_domain.get(domain)
            if owner is not None and owner.id != provider.id:
                raise ConfigurationError(
                    f"providers.{provider.id}.domains",
                    f"provider {provider.id!r}: domain {domain!r} already belongs to "
                    f"provider {owner.id!r}",
                )
        if old is not None:
            self._providers = tuple(p if p.id != old.id else provider for p in self._providers)
            for domain in old.domains:
                self._by_domain.pop(domain, None)
        else:
            self._providers = (*self._providers, provider)
        self._by_id[provider.id] = provider
        for domain in provider.domains:
            self._by_domain[domain] = provider

    # look-ups -----------------------------------------------------------

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._by_id

    def __repr__(self) -> str:
        return f"<ProviderRegistry: {len(self._providers)} providers>"

    @property
    def ids(self) -> tuple[str, ...]:
        """The provider ids, in registration order."""
        return tuple(provider.id for provider in self._providers)

    def by_id(self, provider_id: str) -> Provider | None:
        """The provider with this id, or None."""
        return self._by_id.get(provider_id)

    def by_domain(self, domain: str) -> Provider | None:
        """The provider whose addresses use this domain (``gmail.com``), or None.

        Also accepts a whole address. Case-insensitive and IDNA-normalised; an
        invalid domain finds nothing.
        """
        if "@" in domain:
            domain = domain.rpartition("@")[2]
        try:
            key = normalize_domain(domain)
        except ConfigurationError:
            return None
        return self._by_domain.get(key)

    def by_mx(self, mx_host: str) -> Provider | None:
        """The provider hosting a domain whose MX record names `mx_host`, or None.

        The most specific matching pattern wins (see `Provider.mx_specificity`);
        on a tie, the provider registered last wins, so that user presets beat
        built-in ones. A trailing dot, as in DNS answers, is ignored.
        """
        try:
            host = normalize_domain(mx_host)
        except ConfigurationError:
            return None
        best: tuple[int, int] | None = None
        found: Provider | None = None
        for provider in self._providers:
            score = provider.mx_specificity(host)
            if score is not None and (best is None or score >= best):
                best, found = score, provider
        return found

    def by_mx_hosts(self, mx_hosts: Iterable[str]) -> Provider | None:
        """The provider for a domain's MX hosts (in preference order): the first that matches."""
        for host in mx_hosts:
            provider = self.by_mx(host)
            if provider is not None:
                return provider
        return None


@functools.cache
def _default_registry() -> ProviderRegistry:
    text = (
        resources.files("mailbridge.providers")
        .joinpath("providers.toml")
        .read_text(encoding="utf-8")
    )
    return ProviderRegistry(_parse_toml(text, "mailbridge/providers/providers.toml"))
