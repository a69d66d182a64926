"""`AsyncDeliveryClient`: `DeliveryClient` for asyncio applications.

Composing (pure CPU) and the IMAP work (archive, import, folders: imapclient,
run in a worker thread) are the sync client's own code; SMTP runs on asyncio
connections over the same sans-I/O core, without threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from ._addresses import Mailbox
from ._bulk import BulkOutcome
from ._client import DeliveryClient, SendResult
from ._identity import PlatformRelay
from ._message import DocumentEmail
from ._results import ConnectionReport, Transaction
from ._transport_choice import (
    blacklist_check,
    choose_transport,
    concurrency_of,
    refuse_suppressed,
    run_blacklist_check,
    with_imap,
)
from .composer import PreparedMessage
from .dnsauth import DkimSigner
from .errors import ConfigurationError, MailbridgeError
from .settings import ImapSettings, SmtpSettings
from .smtp._async_pool import AsyncConnectionPool, AsyncSmtpTransport, AsyncTransport
from .smtp._async_probe import probe_smtp_async

if TYPE_CHECKING:  # IMAP and DNS load on first use, as in _client.py
    import dns.resolver

    from ._spf_identity import SenderAuthorization
    from .deliverability import BlacklistCheck, SuppressionList
    from .imap import Checkpoint, Folder, ImportBatch

__all__ = ["AsyncDeliveryClient"]

Email = DocumentEmail | PreparedMessage


class _ComposeOnly:
    """The inner sync client's transport: it composes and archives, never sends."""

    def deliver(self, message: PreparedMessage) -> Transaction:
        raise RuntimeError("the composing client of an AsyncDeliveryClient never sends")

    def close(self) -> None:
        """Nothing to release."""


def _make_transport(
    smtp: SmtpSettings,
    transport: AsyncTransport | None,
    pool: AsyncConnectionPool | None,
    max_per_server: int | None,
    messages_in_flight: int | None,
) -> AsyncTransport:
    """As `DeliveryClient`'s: `transport`, or one over `pool` or a pool with these limits."""
    return choose_transport(
        smtp,
        transport,
        pool,
        max_per_server,
        messages_in_flight,
        protocol=AsyncTransport,
        pool_class=AsyncConnectionPool,
        make=lambda smtp, pool: AsyncSmtpTransport(smtp, pool=pool),
        methods="async deliver() and aclose()",
    )


class AsyncDeliveryClient:
    """Composes, validates and sends document emails for one tenant account, for asyncio.

    The same API as `DeliveryClient`, with `async` methods; create it with
    `own_smtp()`, `relay()` or `spf_imitation()` and use it with `async with`
    (or call `aclose()`). Use it from one event loop.
    """

    def __init__(
        self,
        composer: DeliveryClient,
        transport: AsyncTransport,
        connection_test: Callable[[], Awaitable[ConnectionReport]] | None = None,
    ) -> None:
        self._sync = composer
        self.transport = transport
        self._connection_test = connection_test
        self._closed = False

    @classmethod
    def own_smtp(
        cls,
        sender: str | Mailbox,
        smtp: SmtpSettings,
        display_name: str | None = None,
        imap: ImapSettings | None = None,
        *,
        archive_sent: bool | None = None,
        pool: AsyncConnectionPool | None = None,
        max_per_server: int | None = None,
        messages_in_flight: int | None = None,
        transport: AsyncTransport | None = None,
        suppression: SuppressionList | None = None,
    ) -> AsyncDeliveryClient:
        """Send through the tenant's own SMTP server (see `DeliveryClient.own_smtp`).

        `pool` is an `AsyncConnectionPool` to share between clients.
        """
        composer = DeliveryClient.own_smtp(
            sender,
            smtp,
            display_name,
            imap,
            archive_sent=archive_sent,
            transport=_ComposeOnly(),
            suppression=suppression,
        )
        return cls(
            composer,
            _make_transport(smtp, transport, pool, max_per_server, messages_in_flight),
            lambda: probe_smtp_async(smtp),
        )

    @classmethod
    def relay(
        cls,
        sender: str | Mailbox,
        relay: PlatformRelay,
        display_name: str | None = None,
        imap: ImapSettings | None = None,
        *,
        pool: AsyncConnectionPool | None = None,
        max_per_server: int | None = None,
        messages_in_flight: int | None = None,
        transport: AsyncTransport | None = None,
        suppression: SuppressionList | None = None,
    ) -> AsyncDeliveryClient:
        """Send through the platform's relay for the tenant (see `DeliveryClient.relay`)."""
        composer = DeliveryClient.relay(
            sender, relay, display_name, imap, transport=_ComposeOnly(), suppression=suppression
        )
        return cls(
            composer,
            _make_transport(relay.smtp, transport, pool, max_per_server, messages_in_flight),
            lambda: probe_smtp_async(relay.smtp),
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
        pool: AsyncConnectionPool | None = None,
        max_per_server: int | None = None,
        messages_in_flight: int | None = None,
        transport: AsyncTransport | None = None,
        suppression: SuppressionList | None = None,
    ) -> AsyncDeliveryClient:
        """Send through the relay with the tenant's address in From (see
        `DeliveryClient.spf_imitation`); the SPF check runs in a worker thread."""
        composer = DeliveryClient.spf_imitation(
            sender,
            relay,
            display_name,
            fallback=fallback,
            resolver=resolver,
            imap=imap,
            dkim=dkim,
            transport=_ComposeOnly(),
            suppression=suppression,
        )
        return cls(
            composer,
            _make_transport(relay.smtp, transport, pool, max_per_server, messages_in_flight),
            lambda: probe_smtp_async(relay.smtp),
        )

    @property
    def identity(self) -> Any:
        """Who the messages come from (the delivery mode's identity)."""
        return self._sync.identity

    @property
    def imap(self) -> ImapSettings | None:
        """The IMAP account for archiving and importing, if any."""
        return self._sync.imap

    @property
    def archive_sent(self) -> bool:
        """Whether sent messages are copied to the archive folder."""
        return self._sync.archive_sent

    def __repr__(self) -> str:
        transport = type(self.transport).__name__
        return f"<AsyncDeliveryClient mode={self._sync.identity.mode} transport={transport}>"

    async def sender_authorization(self, *, refresh: bool = False) -> SenderAuthorization:
        """For SPF imitation: does the tenant's SPF record authorise the relay (and DMARC)?"""
        return await asyncio.to_thread(self._sync.sender_authorization, refresh=refresh)

    # -- composing -------------------------------------------------------------

    async def prepare(self, email: DocumentEmail) -> PreparedMessage:
        """Compose `email` into the exact bytes `send()` will transmit.

        Composing is CPU work done in place; in SPF imitation the SPF check
        (DNS, cached for the records' TTL) runs in a worker thread.
        """
        if self._sync.identity.mode == "spf_imitation":  # the SPF check asks DNS: a thread
            return await asyncio.to_thread(self._sync.prepare, email)
        return self._sync.prepare(email)

    async def preview(self, email: Email) -> bytes:
        """The message exactly as it would be transmitted (Bcc not included)."""
        if isinstance(email, PreparedMessage):
            return email.data
        return (await self.prepare(email)).data

    # -- sending ---------------------------------------------------------------

    async def send(self, email: Email, *, allow_suppressed: bool = False) -> SendResult:
        """Send one email; returns who accepted it or raises a `DeliveryError`.

        Cancelling it never leaves half a message: before its bytes went out it
        is withdrawn; after, the `CancelledError` carries a
        `DeliveryOutcomeUnknown` as its `__cause__` (the message may arrive).
        Suppressed recipients are refused as by `DeliveryClient.send` (the
        suppression list is asked in a worker thread).
        """
        prepared = email if isinstance(email, PreparedMessage) else await self.prepare(email)
        if self._closed:
            raise MailbridgeError("this AsyncDeliveryClient is closed")
        suppression = self._sync.suppression
        if suppression is not None and not allow_suppressed:
            await asyncio.to_thread(refuse_suppressed, suppression, prepared, allow_suppressed)
        result = self._sync._result_of(prepared, await self.transport.deliver(prepared))
        if result.archive_reason or self._sync.imap is None:
            return result
        return await self.archive(result)

    async def send_many(
        self, emails: Iterable[Email] | AsyncIterable[Email], *, concurrency: int | None = None
    ) -> AsyncIterator[BulkOutcome]:
        """Send many emails, `concurrency` at a time; outcomes arrive as they complete.

        As `DeliveryClient.send_many`, as an async iterator; `emails` may be an
        async iterable. Leaving the loop early cancels the sends still running
        (see `send()` for what a cancelled send means).
        """
        if concurrency is None:
            concurrency = self.default_concurrency
        if concurrency < 1:
            raise ConfigurationError("concurrency", "must be at least 1")
        # `concurrency` workers, each taking the next email the moment its send is done
        # (no event-loop turns through this generator first: on one pipelined connection
        # those turns delayed every next message). Outcomes wait for the caller in a
        # queue; `room` bounds them together with the sends in flight, so memory does
        # not grow with the batch when the caller is slow.
        iterator = _aenumerate(emails)
        taking = asyncio.Lock()
        room = asyncio.Semaphore(2 * concurrency)
        outcomes: asyncio.Queue[BulkOutcome | None] = asyncio.Queue()  # None: a worker ended
        failures: list[Exception] = []
        exhausted = False

        async def worker() -> None:
            nonlocal exhausted
            try:
                while True:
                    await room.acquire()
                    async with taking:
                        if exhausted:
                            return
                        try:
                            index, email = await anext(iterator)
                        except StopAsyncIteration:
                            exhausted = True
                            return
                        except Exception as exc:  # the input failed: finish, then raise it
                            failures.append(exc)
                            exhausted = True
                            return
                    outcomes.put_nowait(await self._outcome(index, email))
            finally:
                outcomes.put_nowait(None)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            ended = 0
            while ended < len(workers):
                outcome = await outcomes.get()
                if outcome is None:
                    ended += 1
                    continue
                room.release()
                yield outcome
        finally:
            for task in workers:
                task.cancel()
            await asyncio.wait(workers)
        for task in workers:
            if not task.cancelled() and (bug := task.exception()) is not None:
                raise bug  # not an Exception from a send (those are outcomes): a bug
        if failures:
            raise failures[0]

    async def _outcome(self, index: int, email: Email) -> BulkOutcome:
        try:
            return BulkOutcome(index, self, email, result=await self.send(email))
        except Exception as exc:
            return BulkOutcome(index, self, email, error=exc)

    @property
    def default_concurrency(self) -> int:
        """Sends that fill this client's connection pool: connections x messages in flight."""
        return concurrency_of(self.transport, AsyncSmtpTransport)

    # -- IMAP (imapclient, in a worker thread) ----------------------------------

    async def archive(self, result: SendResult) -> SendResult:
        """Store the sent message in the archive folder (again); never stores it twice."""
        return await asyncio.to_thread(self._sync.archive, result)

    async def import_documents(
        self, checkpoint: Checkpoint | None = None, *, folder: str = "INBOX"
    ) -> ImportBatch:
        """Import the documents that arrived in `folder` since `checkpoint` (see InboxImporter)."""
        return await asyncio.to_thread(self._sync.import_documents, checkpoint, folder=folder)

    async def list_folders(self) -> list[Folder]:
        """The IMAP account's folders with their special-use flags (for a folder picker)."""
        return await asyncio.to_thread(self._sync.list_folders)

    async def test_connection(
        self, *, blacklists: bool | BlacklistCheck = False
    ) -> ConnectionReport:
        """Connect, secure, log in and report each step; never sends a message.

        With an IMAP account, `report.imap` holds its own report; `blacklists` as
        for `DeliveryClient.test_connection` (the DNS lookups run in a worker thread).
        """
        if self._connection_test is None:
            raise MailbridgeError("this transport has no connection test")
        check = blacklist_check(blacklists)
        report = await self._connection_test()
        imap = self._sync.imap
        if imap is not None:
            from .imap import probe_imap

            report = with_imap(report, await asyncio.to_thread(probe_imap, imap))
        if check is None:
            return report
        found = await asyncio.to_thread(run_blacklist_check, check, self._sync.blacklist_targets)
        return attrs.evolve(report, blacklists=found)

    # -- lifecycle -------------------------------------------------------------

    async def aclose(self) -> None:
        """Close open connections. The client can no longer send afterwards."""
        self._closed = True
        await self.transport.aclose()
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncDeliveryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _aenumerate(
    emails: Iterable[Email] | AsyncIterable[Email],
) -> AsyncIterator[tuple[int, Email]]:
    index = 0
    if isinstance(emails, AsyncIterable):
        async for email in emails:
            yield index, email
            index += 1
    else:
        for email in emails:
            yield index, email
            index += 1
