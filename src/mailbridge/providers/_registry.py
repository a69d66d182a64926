"""The provider registry: look-ups of known mail providers by id, address domain and MX host.

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

import functools
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from ..errors import ConfigurationError
from ._loading import _parse_toml, _read_path
from ._models import Provider, normalize_domain

__all__ = ["ProviderRegistry"]


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

    def by_server(self, host: str) -> Provider | None:
        """The first provider with an SMTP or IMAP endpoint (or server alias) `host`, or None.

        Only endpoints with a fixed host name count (not ``mail.%EMAILDOMAIN%``);
        case and a trailing dot are ignored.
        """
        try:
            wanted = normalize_domain(host)
        except ConfigurationError:
            return None
        for provider in self._providers:
            if wanted in provider.server_aliases:
                return provider
            for endpoint in (*provider.smtp, *provider.imap):
                if not endpoint.is_template and endpoint.host.lower().rstrip(".") == wanted:
                    return provider
        return None

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
