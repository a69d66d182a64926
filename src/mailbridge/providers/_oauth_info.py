"""How a provider does OAuth2 (`OAuth2Info`) and dated changes to its logins (`Milestone`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from ..errors import ConfigurationError

__all__ = ["OAUTH2_PROTOCOLS", "Milestone", "OAuth2Info", "to_strings"]


def to_strings(values: Iterable[str]) -> tuple[str, ...]:
    """`values` as a tuple; a single string is one value, not its characters."""
    if isinstance(values, str):
        return (values,)
    return tuple(values)


OAUTH2_PROTOCOLS = ("smtp", "imap")
_PARTIAL_DATE = re.compile(r"[0-9]{4}(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01]))?)?")


def _optional_https(field: str, value: str | None) -> None:
    if value is not None and (
        not isinstance(value, str) or not value.startswith("https://") or len(value) < 12
    ):
        raise ConfigurationError(field, f"{value!r} is not an https:// URL")


@attrs.frozen
class OAuth2Info:
    """Where OAuth2 tokens for a provider come from, for which scopes, and where OAuth2 is a must.

    `issuer` names the authorization server (``login.microsoftonline.com``); `scopes`
    are the ones mail needs. `authority` is the MSAL authority (Microsoft); `auth_url`,
    `token_url` and `device_code_url` are the authorization, token and device
    authorization endpoints (None where a flow is not offered for mail scopes).
    `required_for` lists the protocols (``"smtp"``, ``"imap"``) on which passwords
    and app passwords are refused, so OAuth2 is the only way in.
    """

    issuer: str = attrs.field()
    scopes: tuple[str, ...] = attrs.field(converter=to_strings)
    authority: str | None = attrs.field(default=None)
    auth_url: str | None = attrs.field(default=None)
    token_url: str | None = attrs.field(default=None)
    device_code_url: str | None = attrs.field(default=None)
    required_for: tuple[str, ...] = attrs.field(default=(), converter=to_strings)

    @issuer.validator
    def _check_issuer(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError("issuer", "the OAuth2 issuer is empty")

    @scopes.validator
    def _check_scopes(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        if not value or not all(isinstance(scope, str) and scope for scope in value):
            raise ConfigurationError("scopes", "give at least one non-empty OAuth2 scope")

    @authority.validator
    @auth_url.validator
    @token_url.validator
    @device_code_url.validator
    def _check_url(self, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        _optional_https(attribute.name, value)

    @required_for.validator
    def _check_required(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        for protocol in value:
            if protocol not in OAUTH2_PROTOCOLS:
                raise ConfigurationError(
                    "required_for", f"{protocol!r} is not one of 'smtp', 'imap'"
                )

    @property
    def offers_device_flow(self) -> bool:
        """True when the device-code flow works for the mail scopes (a code shown on a console)."""
        return self.device_code_url is not None


@attrs.frozen
class Milestone:
    """One dated step of a provider's change (such as retiring passwords): `date`, `change`,
    and the `source` that announced it.

    `date` is an ISO date as precise as the announcement: ``2026-01-27``,
    ``2026-12`` (a month) or ``2027`` (a year).
    """

    date: str = attrs.field()
    change: str = attrs.field()
    source: str = attrs.field()

    @date.validator
    def _check_date(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not _PARTIAL_DATE.fullmatch(value):
            raise ConfigurationError("date", f"{value!r} is not YYYY, YYYY-MM or YYYY-MM-DD")

    @change.validator
    def _check_change(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError("change", "say what changes")

    @source.validator
    def _check_source(self, _: attrs.Attribute[str], value: str) -> None:
        _optional_https("source", value)
