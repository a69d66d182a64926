"""Who a message says it is from, in each delivery mode (see docs/design.md).

* own SMTP: From is the tenant's address (or the email's `from_override`).
* relay: From is the platform's no-reply address with the tenant's name first
  ("Acme GmbH via Example App"); Reply-To is the tenant's verified address; the
  envelope sender is the platform's bounce address (VERP-tagged if asked).
* SPF imitation: From and envelope sender are the tenant's own address, sent
  through the platform's relay once the tenant's SPF record allows it
  (`_spf_identity.py`, which alone of the identities needs DNS).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import attrs

from ._addresses import Mailbox, parse_mailbox
from ._headersafety import has_line_break
from ._message import DocumentEmail
from .errors import ConfigurationError
from .settings import SmtpSettings

__all__ = [
    "Addressing",
    "Identity",
    "OwnIdentity",
    "PlatformRelay",
    "RelayIdentity",
    "named",
]


@attrs.frozen
class Addressing:
    """The addresses of one message: From, Reply-To and the envelope sender."""

    author: Mailbox
    reply_to: Mailbox | None
    envelope_sender: Mailbox
    mode: str = "own_smtp"
    note: str | None = None  # e.g. why SPF imitation fell back to the relay


class Identity(Protocol):
    """Decides the addressing of a message for one delivery mode."""

    @property
    def mode(self) -> str:
        """ "own_smtp", "relay" or "spf_imitation"."""
        ...

    @property
    def message_id_domain(self) -> str:
        """The domain new Message-IDs are made at (the From address's)."""
        ...

    def addressing(self, email: DocumentEmail, message_id: str) -> Addressing:
        """From, Reply-To and envelope sender for `email` (whose Message-ID is given)."""
        ...


def named(mailbox: Mailbox, name: str | None) -> Mailbox:
    """`mailbox` shown as `name`, when a name is given."""
    return attrs.evolve(mailbox, display_name=name) if name else mailbox


@attrs.frozen
class OwnIdentity:
    """The tenant's own server: the tenant's address everywhere."""

    sender: Mailbox
    display_name: str | None = None
    mode: str = "own_smtp"

    @property
    def message_id_domain(self) -> str:
        """The tenant's domain."""
        return self.sender.envelope_address.rpartition("@")[2]

    def addressing(self, email: DocumentEmail, message_id: str) -> Addressing:
        """From is the tenant (or `from_override`); Reply-To as the email says."""
        author = email.from_override or named(self.sender, self.display_name)
        return Addressing(author, email.reply_to, self.sender, self.mode)


def _to_noreply(value: str | Mailbox) -> Mailbox:
    return parse_mailbox("noreply_address", value)


def _to_bounce(value: str | Mailbox) -> Mailbox:
    return parse_mailbox("bounce_address", value)


def _check_pattern(_: object, __: object, value: str) -> None:
    if has_line_break(value):
        raise ConfigurationError("display_name_pattern", "line breaks are not allowed")
    try:
        value.format(tenant="t", app="a")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigurationError(
            "display_name_pattern", f"use only {{tenant}} and {{app}} ({exc})"
        ) from None


@attrs.frozen
class PlatformRelay:
    """The application's own relay and the identity it sends with.

    `smtp` reaches the relay; `app_name` is shown after the tenant's name;
    `noreply_address` is the From address in relay mode; bounces go to
    `bounce_address`, tagged per message (`bounces+TOKEN@app.example`) when
    `verp` is set. `spf_include` (e.g. "spf.app.example") and `sending_ips`
    describe the relay for SPF imitation.
    """

    smtp: SmtpSettings
    app_name: str
    noreply_address: Mailbox = attrs.field(converter=_to_noreply)
    bounce_address: Mailbox = attrs.field(converter=_to_bounce)
    display_name_pattern: str = attrs.field(default="{tenant} via {app}", validator=_check_pattern)
    verp: bool = False
    spf_include: str | None = None
    sending_ips: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.app_name or has_line_break(self.app_name):
            raise ConfigurationError("app_name", "give the application's name, on one line")

    def bounce_token(self, message_id: str) -> str:
        """The VERP tag for a message: the first 16 hex digits of SHA-256 of its Message-ID."""
        return hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:16]

    def envelope_sender(self, message_id: str) -> Mailbox:
        """The bounce address for a message, VERP-tagged when `verp` is set."""
        if not self.verp:
            return self.bounce_address
        local, _, domain = self.bounce_address.envelope_address.rpartition("@")
        return parse_mailbox("bounce_address", f"{local}+{self.bounce_token(message_id)}@{domain}")

    def display_name(self, tenant: str) -> str:
        """ "Acme GmbH via Example App"."""
        return self.display_name_pattern.format(tenant=tenant, app=self.app_name)


@attrs.frozen
class RelayIdentity:
    """The platform's relay and address, with the tenant's name first and Reply-To."""

    tenant: Mailbox
    relay: PlatformRelay
    display_name: str | None = None
    mode: str = "relay"

    @property
    def message_id_domain(self) -> str:
        """The platform's domain (of its no-reply address)."""
        return self.relay.noreply_address.envelope_address.rpartition("@")[2]

    def addressing(self, email: DocumentEmail, message_id: str) -> Addressing:
        """The send dialog's From means Reply-To here (DESIGN.md)."""
        tenant_name = self.display_name or self.tenant.display_name or self.tenant.address
        author = named(self.relay.noreply_address, self.relay.display_name(tenant_name))
        reply_to = email.from_override or email.reply_to or named(self.tenant, self.display_name)
        return Addressing(author, reply_to, self.relay.envelope_sender(message_id), self.mode)
