"""Connection settings: frozen, validated values that never show a secret."""

from __future__ import annotations

import enum
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._tokens import TokenProvider, TokenSource
from .errors import ConfigurationError

__all__ = ["ImapSettings", "Secret", "Security", "ServerSettings", "SmtpSettings"]

# RFC 5321 section 4.5.3.2: a client waits at least 5 minutes for most replies and
# 10 minutes for the reply to the end of data; longer waits are never needed.
MAX_COMMAND_TIMEOUT = 300.0
MAX_DATA_TIMEOUT = 600.0
# RFC 5321 4.1.3/4.1.4: a domain or an address literal, for EHLO.
_EHLO_NAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"|\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]"
)


class Secret:
    """A password or token that never shows itself in `repr`, `str`, logs or tracebacks.

    Call `reveal()` to get the value where it is really needed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret takes a str")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled, so that it cannot leak into caches or queues")


class Security(enum.Enum):
    """How a connection is protected."""

    IMPLICIT_TLS = "implicit_tls"
    """TLS from the first byte ("SSL/TLS"); usually port 465 (SMTP) or 993 (IMAP)."""
    STARTTLS = "starttls"
    """Plain greeting, then upgraded with STARTTLS, which must succeed; usually 587 or 143."""
    NONE = "none"
    """No encryption at all; only when chosen explicitly (e.g. a relay on localhost)."""

    @classmethod
    def parse(cls, value: Security | str) -> Security:
        """Accept a `Security`, its value, or a form's label ("SSL/TLS", "STARTTLS")."""
        if isinstance(value, Security):
            return value
        key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
        aliases = {
            "ssl": "implicit_tls",
            "ssl/tls": "implicit_tls",
            "smtps": "implicit_tls",
            "implicit": "implicit_tls",
            "plain": "none",
            "": "?",
        }
        key = aliases.get(key, key)
        try:
            return cls(key)
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise ConfigurationError(
                "security", f"unknown security mode {value!r}; choose one of {choices}"
            ) from None


def _to_security(value: Security | str) -> Security:
    return Security.parse(value)


def _to_upper(value: str | None) -> str | None:
    return None if value is None else str(value).upper()


def _is_token_provider(value: object) -> bool:
    return isinstance(value, TokenProvider)


def _to_secret(value: Any) -> Any:
    # A TokenProvider given as the password is kept as it is; post-init moves it.
    if value is None or isinstance(value, Secret) or _is_token_provider(value):
        return value
    return Secret(value)


def _to_path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _check_host(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("host", "the server host name is empty")
    if any(ch.isspace() for ch in value) or "/" in value or value.startswith("["):
        raise ConfigurationError("host", f"{value!r} is not a host name or IP address")


def _check_port(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigurationError("port", f"{value!r} is not a port number (1-65535)")


def _timeout_check(ceiling: float) -> Callable[[object, attrs.Attribute[float], float], None]:
    def check(_: object, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigurationError(
                attribute.name, f"{value!r} is not a positive number of seconds"
            )
        if value > ceiling:
            raise ConfigurationError(
                attribute.name, f"{value} s is longer than RFC 5321 ever requires ({ceiling:g} s)"
            )

    return check


@attrs.frozen
class ServerSettings:
    """What SMTP and IMAP settings share: where the server is, how to log in, TLS, time-outs."""

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_check_port)
    security: Security = attrs.field(converter=_to_security)
    username: str | None = None
    password: Secret | None = attrs.field(default=None, converter=_to_secret)
    # A mailbridge.oauth.TokenProvider, or a callable returning a fresh bearer token.
    oauth2_token: TokenSource | None = attrs.field(default=None, repr=False)
    ca_file: Path | None = attrs.field(default=None, converter=_to_path)
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    connect_timeout: float = attrs.field(
        default=10.0, validator=_timeout_check(MAX_COMMAND_TIMEOUT)
    )
    command_timeout: float = attrs.field(
        default=30.0, validator=_timeout_check(MAX_COMMAND_TIMEOUT)
    )

    def __attrs_post_init__(self) -> None:
        if _is_token_provider(self.password):  # password=provider: an OAuth2 login
            if self.oauth2_token is not None:
                raise ConfigurationError(
                    "password", "give either a password or an OAuth2 token provider"
                )
            object.__setattr__(self, "oauth2_token", self.password)
            object.__setattr__(self, "password", None)
        if self.password is not None and self.oauth2_token is not None:
            raise ConfigurationError(
                "password", "give either a password or an OAuth2 token provider"
            )
        if self.oauth2_token is not None and not (
            callable(self.oauth2_token) or _is_token_provider(self.oauth2_token)
        ):
            raise ConfigurationError(
                "oauth2_token", "must be a TokenProvider or a callable that returns a token"
            )
        has_secret = self.password is not None or self.oauth2_token is not None
        if has_secret and not self.username:
            raise ConfigurationError("username", "a password or OAuth2 token needs a user name")
        if self.username is not None and not has_secret:
            raise ConfigurationError("password", "a user name needs a password or OAuth2 token")
        if self.username is not None and any(ch in self.username for ch in "\r\n\x00"):
            raise ConfigurationError("username", "line breaks are not allowed")
        if self.oauth2_token is not None and self.username and "\x01" in self.username:
            # ^A separates the fields of XOAUTH2/OAUTHBEARER: it would add one (auth=...).
            raise ConfigurationError("username", "control characters are not allowed")
        if self.ca_file is not None and self.ssl_context is not None:
            raise ConfigurationError("ca_file", "give either ca_file or ssl_context, not both")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ConfigurationError("ca_file", f"{self.ca_file} is not a readable file")
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context", "must be an ssl.SSLContext")

    @property
    def has_credentials(self) -> bool:
        """True when a user name and a password or token are set."""
        return self.username is not None

    def create_ssl_context(self) -> ssl.SSLContext:
        """The verifying TLS context used for this server (TLS 1.2 or newer)."""
        if self.ssl_context is not None:
            return self.ssl_context
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except OSError as exc:  # ssl.SSLError too: not PEM, no certificate, unreadable
            reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
            raise ConfigurationError(
                "ca_file", f"{self.ca_file} holds no usable PEM certificate ({reason or exc})"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@attrs.frozen
class SmtpSettings(ServerSettings):
    """How to reach and log in to an SMTP server.

    `security` decides the protection (see `Security`); certificates are always
    verified, against the system's trust store, `ca_file`, or your own
    `ssl_context`. Give `password` for AUTH PLAIN/LOGIN/CRAM-MD5, or
    `oauth2_token` (a `mailbridge.oauth.TokenProvider`, also accepted as `password`,
    or a callable returning a fresh bearer token) for OAUTHBEARER/XOAUTH2.
    Passwords are only sent over TLS unless `allow_plaintext_auth` is set.
    """

    # RFC 5321 4.5.3.2.6: wait 10 minutes for the reply to the message; giving up
    # earlier leaves it unknown whether the message was delivered.
    data_timeout: float = attrs.field(default=600.0, validator=_timeout_check(MAX_DATA_TIMEOUT))
    local_hostname: str | None = None
    auth_mechanism: str | None = attrs.field(default=None, converter=_to_upper)
    allow_plaintext_auth: bool = False
    chunking: bool = True  # use BDAT (RFC 3030) with PIPELINING when the server offers it

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        supported = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")
        if self.auth_mechanism is not None and self.auth_mechanism not in supported:
            raise ConfigurationError(
                "auth_mechanism", f"{self.auth_mechanism!r} is not one of {', '.join(supported)}"
            )
        if self.local_hostname is not None and not _EHLO_NAME.fullmatch(self.local_hostname):
            raise ConfigurationError(
                "local_hostname",
                f"{self.local_hostname!r} is neither a host name nor an address literal "
                "like [192.0.2.1]",
            )


@attrs.frozen
class ImapSettings(ServerSettings):
    """How to reach and log in to an IMAP server (used for Sent-folder archiving).

    `folder` is the archive folder the tenant picked; None means the special-use
    Sent folder, found on the server. Passwords are only sent over TLS unless
    `allow_plaintext_auth` is set.
    """

    folder: str | None = None
    allow_plaintext_auth: bool = False
