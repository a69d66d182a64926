"""`DeliveryClient`: the one object an application holds per tenant account."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from ._addresses import Mailbox, parse_mailbox
from ._bulk import BulkOutcome, send_many
from ._headersafety import has_line_break
from ._identity import Identity, OwnIdentity, PlatformRelay, RelayIdentity
from ._message import DocumentEmail
from ._psl import organizational_domain
from ._results import ConnectionReport, Transaction
from ._transport_choice import (
    blacklist_check,
    blacklist_targets,
    check_suppression,
    choose_transport,
    concurrency_of,
    refuse_suppressed,
    run_blacklist_check,
    with_imap,
)
from .composer import PreparedMessage, compose, new_message_id
from .dnsauth._dkim import DkimSigner
from .errors import ConfigurationError, MailbridgeError
from .reply import SmtpReply
from .settings import ImapSettings, SmtpSettings
from .smtp.pool import ConnectionPool
from .smtp.probe import probe_smtp
from .smtp.transport import SmtpTransport, Transport

# IMAP (imapclient) and DNS (dnspython: SPF imitation) load where they are first used,
# so that an application sending only through SMTP imports neither (tests/test_imports.py).
if TYPE_CHECKING:
    import dns.resolver

    from ._spf_identity import SenderAuthorization
    from .deliverability import BlacklistCheck, SuppressionList
    from .imap import Checkpoint, Folder, ImportBatch, SentArchiver

__all__ = ["DeliveryClient", "SendResult"]


@attrs.frozen
class SendResult:
    """The outcome of one sent message.

    `accepted` lists the recipients the server took; `refused` maps every
    refused recipient to the server's reply (the message still went to the
    others). `archived` is True once a copy is in the tenant's archive folder,
    False when archiving failed (`archive_reason` says why; the send itself
    succeeded, retry with `DeliveryClient.archive(result)`), None when no IMAP
    account is configured or the server files its own copy. `envelope_id` is the
    DSN envelope id sent with the message when the server offers DSN: store it with
    `message_id`, bounces name it (docs/bounces.md).
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
    archive_reason: str | None = None  # why it was not archived (or skipped)
    archive_folder: str | None = None
    message: PreparedMessage | None = attrs.field(default=None, repr=False, eq=False)
    envelope_id: str | None = None  # the DSN envelope id (RFC 3461 ENVID) bounces will name

    @property
    def ok(self) -> bool:
        """True when every recipient accepted the message."""
        return not self.refused


def _check_display_name(name: str | None) -> None:
    if name is not None and has_line_break(name):
        raise ConfigurationError("display_name", "line breaks are not allowed")


def _make_transport(
    smtp: SmtpSettings,
    transport: Transport | None,
    pool: ConnectionPool | None,
    max_per_server: int | None,
    messages_in_flight: int | None,
) -> Transport:
    """The constructors' `transport`, or an `SmtpTransport` over `pool` or a pool with these
    limits (the defaults when none is given)."""
    return choose_transport(
        smtp,
        transport,
        pool,
        max_per_server,
        messages_in_flight,
        protocol=Transport,
        pool_class=ConnectionPool,
        make=lambda smtp, pool: SmtpTransport(smtp, pool=pool),
        methods="deliver() and close()",
    )


def _archiver(imap: ImapSettings | None) -> SentArchiver | None:
    """The archiver of copies into `imap`'s Sent folder, when an IMAP account is given."""
    if imap is None:
        return None
    from .imap import SentArchiver

    return SentArchiver(imap)


def _archives_sent(smtp: SmtpSettings, imap: ImapSettings | None) -> bool:
    """Whether an own-SMTP client archives by default: not where the server files its own copy."""
    if imap is None:
        return False  # nothing to archive into
    from .imap import files_own_sent_copy

    return not files_own_sent_copy(smtp.host)


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
        archive_sent: bool = True,
        suppression: SuppressionList | None = None,
        blacklist_targets: tuple[str, ...] = (),
    ) -> None:
        check_suppression(suppression)
        self.suppression = suppression
        self.blacklist_targets = blacklist_targets
        self.identity = identity
        self.dkim = dkim
        self.archive_sent = archive_sent and imap is not None
        self._archiver = _archiver(imap)
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
        *,
        archive_sent: bool | None = None,
        pool: ConnectionPool | None = None,
        max_per_server: int | None = None,
        messages_in_flight: int | None = None,
        transport: Transport | None = None,
        suppression: SuppressionList | None = None,
    ) -> DeliveryClient:
        """Send through the tenant's own SMTP server, as `sender` (the tenant's address).

        With `imap`, a copy of every sent message goes into the tenant's Sent
        folder, except where the SMTP server files one itself (Gmail, Microsoft
        365) unless `archive_sent=True` forces it.

        Connections come from a `ConnectionPool` of this client's own; pass
        `pool` to share one between clients, or `max_per_server` /
        `messages_in_flight` to limit this client's. `transport` replaces the
        SMTP transport altogether (e.g. a test double); `test_connection()`
        still checks `smtp`. With `suppression` (a `SuppressionList`), `send()`
        refuses recipients that bounced hard before.
        """
        if not isinstance(smtp, SmtpSettings):
            raise ConfigurationError("smtp", "must be an SmtpSettings")
        if imap is not None and not isinstance(imap, ImapSettings):
            raise ConfigurationError("imap", "must be an ImapSettings")
        mailbox = parse_mailbox("sender", sender)
        _check_display_name(display_name)
        return cls(
            identity=OwnIdentity(mailbox, display_name or mailbox.display_name or None),
            transport=_make_transport(smtp, transport, pool, max_per_server, messages_in_flight),
            imap=imap,
            connection_test=lambda: probe_smtp(smtp),
            archive_sent=_archives_sent(smtp, imap) if archive_sent is None else archive_sent,
            suppression=suppression,
            blacklist_targets=blacklist_targets(smtp),
        )

    @classmethod
    def relay(
        cls,
        sender: str | Mailbox,
        relay: PlatformRelay,
        display_name: str | None = None,
        imap: ImapSettings | None = None,
        *,
        pool: ConnectionPool | None = None,
        max_per_server: int | None = None,
        messages_in_flight: int | None = None,
        transport: Transport | None = None,
        suppression: SuppressionList | None = None,
    ) -> DeliveryClient:
        """Send through the platform's relay on behalf of the tenant at `sender`.

        The message comes "from" `"<display_name> via <app>" <noreply@app>`,
        replies go to `sender` (which the tenant must have verified), bounces to
        the platform. In this mode an email's `from_override` means Reply-To.
        `pool`, the limits, `transport` and `suppression` are as for `own_smtp()`:
        one pool shared by every tenant's relay client keeps the relay's connections bounded.
        """
        if not isinstance(relay, PlatformRelay):
            raise ConfigurationError("relay", "must be a PlatformRelay")
        mailbox = parse_mailbox("sender", sender)
        _check_display_name(display_name)
        return cls(
            identity=RelayIdentity(mailbox, relay, display_name),
            transport=_make_transport(
                relay.smtp, transport, pool, max_per_server, messages_in_flight
            ),
            imap=imap,
            connection_test=lambda: probe_smtp(relay.smtp),
            suppression=suppression,
            blacklist_targets=blacklist_targets(relay.smtp, relay.sending_ips),
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
        pool: ConnectionPool | None = None,
        max_per_server: int | None = None,
        messages_in_flight: int | None = None,
        transport: Transport | None = None,
        suppression: SuppressionList | None = None,
    ) -> DeliveryClient:
        """Send through the platform's relay with the tenant's own address in From.

        Before sending, the tenant's SPF record must authorise every IP in
        `relay.sending_ips` (checked with `check_host`, cached for the records'
        TTL). If it does not, the message goes out in relay mode when `fallback`
        is set (`SendResult.note` says why), else `SenderNotAuthorized` is
        raised with the record the tenant must publish. With `dkim` (a
        `DkimSigner` for the tenant's domain) messages are also DKIM-signed.
        `pool`, the limits, `transport` and `suppression` are as for `own_smtp()`.
        """
        if not isinstance(relay, PlatformRelay):
            raise ConfigurationError("relay", "must be a PlatformRelay")
        if not relay.sending_ips:
            raise ConfigurationError("relay", "sending_ips must list the relay's sending IPs")
        mailbox = parse_mailbox("sender", sender)
        _check_display_name(display_name)
        from ._spf_identity import SpfIdentity

        return cls(
            identity=SpfIdentity(mailbox, relay, display_name, fallback, resolver),
            transport=_make_transport(
                relay.smtp, transport, pool, max_per_server, messages_in_flight
            ),
            imap=imap,
            connection_test=lambda: probe_smtp(relay.smtp),
            dkim=dkim,
            suppression=suppression,
            blacklist_targets=blacklist_targets(relay.smtp, relay.sending_ips),
        )

    def sender_authorization(self, *, refresh: bool = False) -> SenderAuthorization:
        """For SPF imitation: does the tenant's SPF record authorise the relay (and DMARC)?"""
        from ._spf_identity import SpfIdentity

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
        data = self.signed(prepared.data, addressing.author)
        return attrs.evolve(prepared, data=data, mode=addressing.mode, note=addressing.note)

    def signed(self, data: bytes, author: Mailbox) -> bytes:
        """`data` DKIM-signed when this client has a signer aligned with `author` (From)."""
        author_domain = author.envelope_address.rpartition("@")[2]
        if self.dkim is not None and organizational_domain(author_domain) == (
            organizational_domain(self.dkim.domain)
        ):  # only an aligned signature helps DMARC; relay-mode fallbacks go unsigned
            return self.dkim.sign(data)
        return data

    def preview(self, email: DocumentEmail | PreparedMessage) -> bytes:
        """The message exactly as it would be transmitted (Bcc not included).

        Message-ID and Date are generated per call unless the email sets them;
        to send exactly what was previewed, pass `prepare(email)` to `send()`.
        """
        if isinstance(email, PreparedMessage):
            return email.data
        return self.prepare(email).data

    # -- sending ---------------------------------------------------------------

    def send(
        self, email: DocumentEmail | PreparedMessage, *, allow_suppressed: bool = False
    ) -> SendResult:
        """Send one email; returns who accepted it or raises a `DeliveryError`.

        Refused recipients are reported in `SendResult.refused` while the others
        get the message; only when every recipient is refused is it an error
        (`RecipientsRefused`). With a suppression list, a message to any address
        on it is not sent at all (`RecipientsSuppressed` names them) unless
        `allow_suppressed`.
        """
        prepared = email if isinstance(email, PreparedMessage) else self.prepare(email)
        with self._lock:
            if self._closed:
                raise MailbridgeError("this DeliveryClient is closed")
        refuse_suppressed(self.suppression, prepared, allow_suppressed)
        # Sends run concurrently (up to the pool's limit); after close() a send in
        # progress finishes and its connection is closed when it is given back.
        result = self._result_of(prepared, self.transport.deliver(prepared))
        return result if result.archive_reason or self._archiver is None else self.archive(result)

    def _result_of(self, prepared: PreparedMessage, transaction: Transaction) -> SendResult:
        """The `SendResult` of a delivered message, before archiving (`archive_reason` set
        when it will not be archived because the server files its own copy)."""
        result = SendResult(
            message_id=prepared.message_id,
            accepted=transaction.accepted,
            refused=transaction.refused,
            reply=transaction.reply,
            envelope_sender=prepared.envelope_sender,
            size=len(prepared.data),
            mode=prepared.mode,
            note=prepared.note,
            message=prepared,
            envelope_id=prepared.envelope_id,
        )
        if self._archiver is not None and not self.archive_sent:
            return attrs.evolve(result, archive_reason="the SMTP server files its own copy in Sent")
        return result

    def send_many(
        self, emails: Iterable[DocumentEmail | PreparedMessage], *, concurrency: int | None = None
    ) -> Iterator[BulkOutcome]:
        """Send many emails, `concurrency` at a time; outcomes arrive as they complete.

        Each `BulkOutcome` has the input `index` and either a `result` or the
        `error` that message met; one failure never stops the others. Connections
        come from this client's pool (at most its `max_per_server`); the default
        `concurrency` keeps them full (`max_per_server` x `messages_in_flight`).
        """
        if concurrency is None:
            concurrency = self.default_concurrency
        return send_many(((self, email) for email in emails), concurrency=concurrency)

    @property
    def default_concurrency(self) -> int:
        """Threads that fill this client's connection pool: connections x messages in flight."""
        return concurrency_of(self.transport, SmtpTransport)

    def archive(self, result: SendResult) -> SendResult:
        """Store the sent message in the archive folder (again); never stores it twice.

        Returns `result` with `archived`, `archive_folder` and `archive_reason`
        updated. An archive failure is reported there, never raised.
        """
        if self._archiver is None:
            raise MailbridgeError("no IMAP account is configured for archiving")
        if result.message is None:
            raise MailbridgeError("this SendResult does not carry its message")
        outcome = self._archiver.archive(
            result.message.data, message_id=result.message_id, bcc=result.message.bcc
        )
        return attrs.evolve(
            result,
            archived=outcome.archived,
            archive_reason=outcome.reason,
            archive_folder=outcome.folder,
        )

    def import_documents(
        self, checkpoint: Checkpoint | None = None, *, folder: str = "INBOX"
    ) -> ImportBatch:
        """Import the documents that arrived in `folder` since `checkpoint` (see InboxImporter).

        The messages are marked `$Imported`; persist the returned batch's
        `checkpoint` for the next call.
        """
        if self.imap is None:
            raise MailbridgeError("no IMAP account is configured")
        from .imap import InboxImporter

        return InboxImporter(self.imap, folder=folder).run(checkpoint)

    def list_folders(self) -> list[Folder]:
        """The IMAP account's folders with their special-use flags (for a folder picker)."""
        if self.imap is None:
            raise MailbridgeError("no IMAP account is configured")
        from .imap import close_imap, list_folders, open_imap

        client = open_imap(self.imap)
        try:
            return list_folders(client)
        finally:
            close_imap(client)

    def test_connection(self, *, blacklists: bool | BlacklistCheck = False) -> ConnectionReport:
        """Connect, secure, log in and report each step; never sends a message.

        With an IMAP account, `report.imap` holds its own report (login and the
        archive folder found) and `report.ok` needs both to work. With
        `blacklists` (True, or a `BlacklistCheck` with a resolver or DQS key),
        `report.blacklists` says whether the sending server (the relay's
        `sending_ips`, else the SMTP host) is on a DNS blacklist.
        """
        if self._connection_test is None:
            raise MailbridgeError("this transport has no connection test")
        check = blacklist_check(blacklists)
        report = self._connection_test()
        if self.imap is not None:
            from .imap import probe_imap

            report = with_imap(report, probe_imap(self.imap))
        if check is None:
            return report
        return attrs.evolve(report, blacklists=run_blacklist_check(check, self.blacklist_targets))

    # -- lifecycle -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once `close()` was called: the client sends nothing more."""
        return self._closed

    def close(self) -> None:
        """Close open connections. The client can no longer send afterwards."""
        with self._lock:
            self._closed = True
            self.transport.close()
            if self._archiver is not None:
                self._archiver.close()

    def __enter__(self) -> DeliveryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
