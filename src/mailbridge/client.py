"""`DeliveryClient`: the one object an application holds per tenant account."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from types import TracebackType

import attrs
import dns.resolver

from .addresses import Mailbox, parse_mailbox
from .composer import PreparedMessage, compose, new_message_id
from .dnsauth.dkim import DkimSigner
from .dnsauth.dmarc import organizational_domain
from .errors import ConfigurationError, MailbridgeError
from .headersafety import has_line_break
from .identity import (
    Identity,
    OwnIdentity,
    PlatformRelay,
    RelayIdentity,
    SenderAuthorization,
    SpfIdentity,
)
from .message import DocumentEmail
from .reply import SmtpReply
from .settings import ImapSettings, SmtpSettings
from .smtp.probe import ConnectionReport, probe_smtp
from .smtp.transport import SmtpTransport, Transport

__all__ = ["DeliveryClient", "SendResult"]


@attrs.frozen
class SendResult:
    """The outcome of one sent message.

    `accepted` lists the recipients the server took; `refused` maps every
    refused recipient to the server's reply (the message still went to the
    others). `archived` is None while no archive is configured.
    """

    message_id: str
    accepted: tuple[str, ...]
    refused: dict[str, SmtpReply]
    reply: SmtpReply
    envelope_sender: str
    size: int
    archived: bool | None = None
    mode: str = "own_smtp"
    note: str | None = None  # e.g. why SPF imitation fell back to relay mode

    @property
    def ok(self) -> bool:
        """True when every recipient accepted the message."""
        return not self.refused


def _check_display_name(name: str | None) -> None:
    if name is not None and has_line_break(name):
        raise ConfigurationError("display_name", "line breaks are not allowed")


class DeliveryClient:
    """Composes, validates and sends document emails for one tenant account.

    Create it with a constructor for the delivery mode, e.g. `own_smtp()`. It
    is a context manager; `close()` ends the open connection. Thread-safe.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        transport: Transport,
        imap: ImapSettings | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        connection_test: Callable[[], ConnectionReport] | None = None,
        dkim: DkimSigner | None = None,
    ) -> None:
        self.identity = identity
        self.dkim = dkim
        self.transport = transport
        self.imap = imap
        self._clock = clock
        self._connection_test = connection_test
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def own_smtp(
        cls,
        sender: str | Mailbox,
        smtp: SmtpSettings,
        display_name: str | None = None,
        imap: ImapSettings | None = None,
    ) -> DeliveryClient:
        """Send through the tenant's own SMTP server, as `sender` (the tenant's address)."""
        if not isinstance(smtp, SmtpSettings):
            raise ConfigurationError("smtp", "must be an SmtpSettings")
        if imap is not None and not isinstance(imap, ImapSettings):
            raise ConfigurationError("imap", "must be an ImapSettings")
        mailbox = parse_mailbox("sender", sender)
        _check_display_name(display_name)
        return cls(
            identity=OwnIdentity(mailbox, display_name or mailbox.display_name or None),
            transport=SmtpTransport(smtp),
            imap=imap,
            connection_test=lambda: probe_smtp(smtp),
        )

    @classmethod
    def relay(
        cls,
        sender: str | Mailbox,
        relay: PlatformRelay,
        display_name: str | None = None,
        imap: ImapSettings | None = None,
    ) -> DeliveryClient:
        """Send through the platform's relay on behalf of the tenant at `sender`.

        The message comes "from" `"<display_name> via <app>" <noreply@app>`,
        replies go to `sender` (which the tenant must have verified), bounces to
        the platform. In this mode an email's `from_override` means Reply-To.
        """
        if not isinstance(relay, PlatformRelay):
            raise ConfigurationError("relay", "must be a PlatformRelay")
        mailbox = parse_mailbox("sender", sender)
        _check_display_name(display_name)
        return cls(
            identity=RelayIdentity(mailbox, relay, display_name),
            transport=SmtpTransport(relay.smtp),
            imap=imap,
            connection_test=lambda: probe_smtp(relay.smtp),
        )

    @classmethod
    def spf_imitation(
        cls,
        sender: str | Mailbox,
        relay: PlatformRelay,
        display_name: str | None = None,
        *,
        fallback: bool = True,
        resolver: dns.resolver.Resolver | None = None,
        imap: ImapSettings | None = None,
        dkim: DkimSigner | None = None,
    ) -> DeliveryClient:
        """Send through the platform's relay with the tenant's own address in From.

        Before sending, the tenant's SPF record must authorise every IP in
        `relay.sending_ips` (checked with `check_host`, cached for the records'
        TTL). If it does not, the message goes out in relay mode when `fallback`
        is set (`SendResult.note` says why), else `SenderNotAuthorized` is
        raised with the record the tenant must publish. With `dkim` (a
        `DkimSigner` for the tenant's domain) messages are also DKIM-signed.
        """
        if not isinstance(relay, PlatformRelay):
            raise ConfigurationError("relay", "must be a PlatformRelay")
        if not relay.sending_ips:
            raise ConfigurationError("relay", "sending_ips must list the relay's sending IPs")
        mailbox = parse_mailbox("sender", sender)
        _check_display_name(display_name)
        return cls(
            identity=SpfIdentity(mailbox, relay, display_name, fallback, resolver),
            transport=SmtpTransport(relay.smtp),
            imap=imap,
            connection_test=lambda: probe_smtp(relay.smtp),
            dkim=dkim,
        )

    def sender_authorization(self, *, refresh: bool = False) -> SenderAuthorization:
        """For SPF imitation: does the tenant's SPF record authorise the relay (and DMARC)?"""
        if not isinstance(self.identity, SpfIdentity):
            raise MailbridgeError("sender_authorization() is for spf_imitation clients")
        return self.identity.authorization(refresh=refresh)

    def __repr__(self) -> str:
        transport = type(self.transport).__name__
        return f"<DeliveryClient mode={self.identity.mode} transport={transport}>"

    # -- composing -------------------------------------------------------------

    def prepare(self, email: DocumentEmail) -> PreparedMessage:
        """Compose `email` into the exact bytes `send()` will transmit."""
        if not isinstance(email, DocumentEmail):
            raise TypeError(f"expected DocumentEmail, got {type(email).__name__}")
        message_id = email.message_id or new_message_id(self.identity.message_id_domain)
        addressing = self.identity.addressing(email, message_id)
        prepared = compose(
            attrs.evolve(email, message_id=message_id),
            sender=addressing.envelope_sender,
            author=addressing.author,
            reply_to=addressing.reply_to,
            now=self._clock,
        )
        prepared = attrs.evolve(prepared, mode=addressing.mode, note=addressing.note)
        author_domain = addressing.author.envelope_address.rpartition("@")[2]
        if self.dkim is not None and organizational_domain(author_domain) == (
            organizational_domain(self.dkim.domain)
        ):  # only an aligned signature helps DMARC; relay-mode fallbacks go unsigned
            prepared = attrs.evolve(prepared, data=self.dkim.sign(prepared.data))
        return prepared

    def preview(self, email: DocumentEmail | PreparedMessage) -> bytes:
        """The message exactly as it would be transmitted (Bcc not included).

        Message-ID and Date are generated per call unless the email sets them;
        to send exactly what was previewed, pass `prepare(email)` to `send()`.
        """
        if isinstance(email, PreparedMessage):
            return email.data
        return self.prepare(email).data

    # -- sending ---------------------------------------------------------------

    def send(self, email: DocumentEmail | PreparedMessage) -> SendResult:
        """Send one email; returns who accepted it or raises a `DeliveryError`.

        Refused recipients are reported in `SendResult.refused` while the others
        get the message; only when every recipient is refused is it an error
        (`RecipientsRefused`).
        """
        prepared = email if isinstance(email, PreparedMessage) else self.prepare(email)
        with self._lock:  # close() waits for a send in progress, and none starts after it
            if self._closed:
                raise MailbridgeError("this DeliveryClient is closed")
            transaction = self.transport.deliver(prepared)
        return SendResult(
            message_id=prepared.message_id,
            accepted=transaction.accepted,
            refused=transaction.refused,
            reply=transaction.reply,
            envelope_sender=prepared.envelope_sender,
            size=len(prepared.data),
            mode=prepared.mode,
            note=prepared.note,
        )

    def test_connection(self) -> ConnectionReport:
        """Connect, secure, log in and report each step; never sends a message."""
        if self._connection_test is None:
            raise MailbridgeError("this transport has no connection test")
        return self._connection_test()

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close open connections. The client can no longer send afterwards."""
        with self._lock:
            self._closed = True
            self.transport.close()

    def __enter__(self) -> DeliveryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
