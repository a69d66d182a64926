"""Reading provider data files: TOML text in, validated `Provider` values out."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigurationError
from ._models import Endpoint, Provider, SendingLimits
from ._oauth_info import Milestone, OAuth2Info

T = TypeVar("T")

_SCHEMA_VERSION = 1


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
    "server_aliases",
    "docs",
    "hints",
    "notes",
    "timeline",
    "limits",
}
_ENDPOINT_KEYS = {"host", "port", "security", "username"}
_OAUTH2_KEYS = {"issuer", "scopes"}
_OAUTH2_OPTIONAL = {"authority", "auth_url", "token_url", "device_code_url", "required_for"}
_MILESTONE_KEYS = {"date", "change", "source"}
_LIMIT_KEYS = {
    "per_minute",
    "per_day",
    "per_minute_recipients",
    "per_day_recipients",
    "connections",
    "source",
}


class _Reader:
    """Turns the parsed TOML of one file into providers, naming the place of every problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> ConfigurationError:
        return ConfigurationError(field, f"{problem} (in {self.source})")

    def build(self, kind: Callable[..., T], values: Mapping[str, Any], place: str, who: str) -> T:
        """`kind(**values)`; its `ConfigurationError` names the field at `place` and the file."""
        try:
            return kind(**values)
        except ConfigurationError as error:
            raise self.fail(f"{place}.{error.field}", f"{who}: {error.problem}") from None

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
        for key in ("domains", "mx_patterns", "server_aliases", "auth", "hints"):
            self.expect_strings(entry, prefix, who, key)
        values = dict(entry)
        values["smtp"] = self.endpoints(entry, prefix, who, "smtp")
        values["imap"] = self.endpoints(entry, prefix, who, "imap")
        if "oauth2" in entry:
            values["oauth2"] = self.oauth2(entry["oauth2"], prefix, who)
        if "timeline" in entry:
            values["timeline"] = self.timeline(entry["timeline"], prefix, who)
        if "limits" in entry:
            values["limits"] = self.limits(entry["limits"], prefix, who)
        return self.build(Provider, values, prefix, who)

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
            endpoints.append(self.build(Endpoint, item, place, who))
        return tuple(endpoints)

    def oauth2(self, raw: object, prefix: str, who: str) -> OAuth2Info:
        place = f"{prefix}.oauth2"
        if not isinstance(raw, dict):
            raise self.fail(place, f"{who}: must be a table {{issuer, scopes}}")
        unknown = set(raw) - _OAUTH2_KEYS - _OAUTH2_OPTIONAL
        missing = _OAUTH2_KEYS - set(raw)
        if unknown or missing:
            problem = (
                f"unknown keys: {', '.join(sorted(unknown))}"
                if unknown
                else (f"missing: {', '.join(sorted(missing))}")
            )
            raise self.fail(place, f"{who}: {problem}")
        for key in ("scopes", "required_for"):
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise self.fail(f"{place}.{key}", f"{who}: must be a list of strings")
        return self.build(OAuth2Info, raw, place, who)

    def timeline(self, raw: object, prefix: str, who: str) -> tuple[Milestone, ...]:
        if not isinstance(raw, list):
            raise self.fail(f"{prefix}.timeline", f"{who}: must be an array [[provider.timeline]]")
        steps = []
        for index, item in enumerate(raw):
            place = f"{prefix}.timeline[{index}]"
            if not isinstance(item, dict) or set(item) != _MILESTONE_KEYS:
                raise self.fail(place, f"{who}: must be a table {{date, change, source}}")
            steps.append(self.build(Milestone, item, place, who))
        return tuple(steps)

    def limits(self, raw: object, prefix: str, who: str) -> SendingLimits:
        place = f"{prefix}.limits"
        if not isinstance(raw, dict):
            raise self.fail(place, f"{who}: must be a table of {', '.join(sorted(_LIMIT_KEYS))}")
        unknown = set(raw) - _LIMIT_KEYS
        if unknown:
            raise self.fail(place, f"{who}: unknown keys: {', '.join(sorted(unknown))}")
        return self.build(SendingLimits, raw, prefix, who)


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
