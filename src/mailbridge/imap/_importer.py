"""Importing incoming invoices from an IMAP folder, exactly once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import imapclient
import imapclient.exceptions

from ..errors import ConfigurationError, DeliveryError, UidValidityChanged
from ..settings import ImapSettings
from ._bodystructure import Part, text, walk
from ._client import BoundedClient
from ._connection import ImapLimits, close_imap, open_imap
from ._documents import DocumentKind, detect_kind
from ._filenames import safe_filename
from ._folder_session import FolderSession, fetch_session, uidvalidity
from ._part_fetch import WINDOW, describe, read_parts

__all__ = ["Checkpoint", "ImportBatch", "ImportedDocument", "InboxImporter"]

IMPORTED_KEYWORD = "$Imported"
DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/xml",
        "text/xml",
        "application/octet-stream",
        "application/x-pdf",
    }
)


@attrs.frozen
class Checkpoint:
    """Where the last import stopped: the folder's UIDVALIDITY and the last UID seen.

    Persist it (`as_dict()` / `from_dict()`) and pass it to the next import.
    """

    uidvalidity: int
    last_uid: int

    def as_dict(self) -> dict[str, int]:
        """For JSON storage."""
        return {"uidvalidity": self.uidvalidity, "last_uid": self.last_uid}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Checkpoint:
        """The inverse of `as_dict()`."""
        return cls(int(data["uidvalidity"]), int(data["last_uid"]))


@attrs.frozen
class ImportedDocument:
    """One document attached to an incoming message.

    `filename` is safe to use as a file name in a directory of yours: one name
    without path, control or bidi characters, leading dots or Windows device names,
    at most 200 bytes (see docs/security.md), or ``document-<uid>-<n>.pdf`` when the
    sender gave none. `original_filename` is the name as the sender wrote it
    (RFC 2231/2047 decoded), for display only.
    """

    filename: str
    content_type: str
    content: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")
    kind: DocumentKind
    sender: str
    subject: str
    date: dt.datetime | None
    message_id: str | None
    folder: str
    uidvalidity: int
    uid: int
    original_filename: str | None = None


@attrs.frozen
class ImportBatch:
    """The documents of one import run and the checkpoint to store afterwards."""

    documents: tuple[ImportedDocument, ...]
    checkpoint: Checkpoint
    uids: tuple[int, ...] = ()  # the messages scanned, marked by `commit()`
    uidvalidity_changed: bool = False
    # (UID, what could not be imported and why): unreadable descriptions, parts over
    # max_part_bytes or the limits, attachments that are no document, structures too
    # deep to walk. These messages are in `uids` too: `commit()` marks them.
    problems: tuple[tuple[int, str], ...] = ()

    @property
    def messages_scanned(self) -> int:
        """How many new messages were looked at."""
        return len(self.uids)


class InboxImporter:
    """Finds documents (PDF, XML e-invoices) in one folder and imports each exactly once.

    Two steps, so that nothing is lost between the server and your storage:
    `fetch(checkpoint)` reads what is new (messages after the checkpoint and not
    yet marked) without changing anything; after storing the documents,
    `commit(batch)` marks those messages (keyword `mark`, default `$Imported`,
    or a move to `move_to`) and you persist `batch.checkpoint`. `run()` does
    both at once. Only BODYSTRUCTURE and the needed attachment parts are
    downloaded, in batches of `batch_size` messages. `limits` bounds each IMAP
    command (default: `ImapLimits.for_parts()` of the part windows).
    """

    def __init__(
        self,
        settings: ImapSettings,
        *,
        folder: str = "INBOX",
        mark: str | None = IMPORTED_KEYWORD,
        move_to: str | None = None,
        batch_size: int = 100,
        max_part_bytes: int = 25 * 1024 * 1024,
        limits: ImapLimits | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError("batch_size", "must be at least 1")
        if max_part_bytes < 1:
            raise ConfigurationError("max_part_bytes", "must be at least 1")
        self.settings = settings
        self.folder = folder
        self.mark = mark
        self.move_to = move_to
        self.batch_size = batch_size
        self.max_part_bytes = max_part_bytes
        # Parts arrive in windows of at most WINDOW bytes: no literal may be much larger.
        self._limits = limits or ImapLimits.for_parts(min(max_part_bytes, WINDOW))

    def fetch(
        self, checkpoint: Checkpoint | None = None, *, timeout: float | None = None
    ) -> ImportBatch:
        """The documents that arrived since `checkpoint`; changes nothing on the server.

        `timeout`: seconds for all the commands after login together (each is also
        bounded by the limits' `command_seconds`, each connection and login by the
        settings' time-outs), so a trickling server cannot hold the fetch for many
        commands' deadlines; past it, an `ImapTimeout` and nothing is imported.

        Raises a `DeliveryError` when the server cannot be used; a message that
        cannot be read, or whose answer breaks the limits (the session is then
        reopened: at most once per message plus three times per fetch), is
        reported in `ImportBatch.problems` instead and marked by `commit()`.
        """
        with fetch_session(self.settings, self.folder, self._limits, timeout) as session:
            return self._fetch(session, checkpoint)

    def commit(self, batch: ImportBatch) -> Checkpoint:
        """Mark the messages of `batch` as imported; returns the checkpoint to persist."""
        client = open_imap(self.settings, limits=self._limits)
        try:
            selected = client.select_folder(self.folder)
            if uidvalidity(selected, self.folder) != batch.checkpoint.uidvalidity:
                raise UidValidityChanged(
                    f"the UIDs of {self.folder} changed since the fetch; nothing was marked. "
                    "Fetch again: messages already marked are not imported twice."
                )
            for start in range(0, len(batch.uids), self.batch_size):
                self._mark_done(client, batch.uids[start : start + self.batch_size])
        finally:
            close_imap(client)
        return batch.checkpoint

    def run(self, checkpoint: Checkpoint | None = None) -> ImportBatch:
        """`fetch()` and `commit()` in one go."""
        batch = self.fetch(checkpoint)
        self.commit(batch)
        return batch

    def watch(
        self,
        checkpoint: Checkpoint | None = None,
        *,
        stop: threading.Event | None = None,
        max_seconds: float = 3600.0,
        idle_seconds: float = 300.0,
    ) -> Iterator[ImportBatch]:
        """Import now, then wait with IDLE for new mail and import again; yields each batch.

        A batch is committed (marked) when you ask for the next one: store its
        documents before continuing the loop. Stopping the loop early leaves the
        last batch unmarked, so it comes again (at least once, never lost).
        Mail that arrives between a fetch and the start of IDLE is noticed
        before idling (UIDNEXT, then SEARCH), so it is imported at once.
        Bounded: ends after `max_seconds`, or as soon as `stop` is set (checked
        at least every `idle_seconds`, which stays under the 29 minutes after
        which servers may drop an idle client); a dropped connection is reopened.
        """
        deadline = time.monotonic() + max_seconds
        stop = stop or threading.Event()
        while not stop.is_set() and time.monotonic() < deadline:
            batch = self.fetch(checkpoint)
            if batch.uids:
                yield batch
                self.commit(batch)  # the consumer asked for more: it has stored this one
            checkpoint = batch.checkpoint
            wait = min(idle_seconds, max(0.0, deadline - time.monotonic()))
            try:
                self._wait_for_mail(stop, wait, checkpoint)
            except DeliveryError:
                stop.wait(min(5.0, max(0.0, deadline - time.monotonic())))  # then reconnect

    def _wait_for_mail(self, stop: threading.Event, wait: float, checkpoint: Checkpoint) -> None:
        """IDLE until new mail arrives, `wait` seconds pass, or `stop` is set.

        Mail that arrived since the last fetch (before this session selected the
        folder, so no EXISTS will ever announce it) ends the wait at once.
        """
        client = open_imap(self.settings, limits=self._limits)
        try:
            selected = client.select_folder(self.folder, readonly=True)
            if self._arrived_since(client, selected, checkpoint):
                return
            if not client.has_capability("IDLE"):
                stop.wait(wait)
                return
            try:
                client.idle()
            except imapclient.exceptions.IMAPClientAbortError:
                raise
            except imapclient.exceptions.IMAPClientError as exc:
                if "EXISTS" in str(exc):  # announced before IDLE's continuation: new mail
                    return
                raise
            try:
                ends = time.monotonic() + wait
                while not stop.is_set() and time.monotonic() < ends:
                    responses = client.idle_check(timeout=0.2)
                    if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                        break
            finally:
                client.idle_done()
        finally:
            close_imap(client)

    def _arrived_since(
        self, client: BoundedClient, selected: dict[bytes, Any], checkpoint: Checkpoint
    ) -> bool:
        """True when the folder holds mail the last fetch did not see."""
        if uidvalidity(selected, self.folder) != checkpoint.uidvalidity:
            return True
        uidnext = selected.get(b"UIDNEXT")
        if isinstance(uidnext, int) and uidnext <= checkpoint.last_uid + 1:
            return False  # no UID was given out since: nothing new, no SEARCH needed
        found = client.search(self._criteria(checkpoint.last_uid))
        return any(int(uid) > checkpoint.last_uid for uid in found)

    def _criteria(self, last_uid: int | None) -> list[Any]:
        criteria: list[Any] = ["NOT", "KEYWORD", self.mark] if self.mark else ["ALL"]
        if last_uid is not None:
            criteria = ["UID", f"{last_uid + 1}:*", *criteria]
        return criteria

    def _fetch(self, session: FolderSession, checkpoint: Checkpoint | None) -> ImportBatch:
        current = session.uidvalidity
        changed = checkpoint is not None and checkpoint.uidvalidity != current
        # After a UIDVALIDITY change the UIDs mean nothing: the keyword alone decides.
        last_uid = checkpoint.last_uid if checkpoint is not None and not changed else 0
        found = session.client.search(self._criteria(last_uid if last_uid else None))
        uids = sorted(uid for uid in map(int, found) if uid > last_uid)
        session.max_reopens += len(uids)  # one per message that alone passes the limits
        documents: list[ImportedDocument] = []
        problems: list[tuple[int, str]] = []
        for start in range(0, len(uids), self.batch_size):
            batch = uids[start : start + self.batch_size]
            documents.extend(self._import_batch(session, batch, problems))
        newest = max(uids, default=last_uid)
        return ImportBatch(
            tuple(documents),
            Checkpoint(current, newest),
            tuple(uids),
            changed,
            tuple(problems),
        )

    def _import_batch(
        self,
        session: FolderSession,
        uids: Sequence[int],
        problems: list[tuple[int, str]],
    ) -> Iterator[ImportedDocument]:
        described = describe(session, uids, lambda uid, text: problems.append((uid, text)))
        for uid, data in described.items():
            parts, unwalkable = walk(data[b"BODYSTRUCTURE"])
            problems.extend((uid, text) for text in unwalkable)
            wanted = [p for p in parts if _maybe_document(p)]
            if wanted:
                yield from self._documents_of(session, uid, data, wanted=wanted, problems=problems)

    def _documents_of(
        self,
        session: FolderSession,
        uid: int,
        data: dict[bytes, Any],
        *,
        wanted: list[Part],
        problems: list[tuple[int, str]],
    ) -> Iterator[ImportedDocument]:
        sender, subject, date, message_id = _envelope(data.get(b"ENVELOPE"))

        def report(part: Part, text: str) -> None:
            problems.append(
                (uid, f"{safe_filename(part.filename, f'part {part.section}')}: {text}")
            )

        numbers = {part.section: number for number, part in enumerate(wanted, start=1)}
        for part, content in read_parts(session, uid, wanted, self.max_part_bytes, report):
            kind = detect_kind(content)
            if kind is None:
                if part.content_type != "application/octet-stream":
                    report(part, f"{part.content_type} that is no PDF or XML")
                continue
            extension = ".pdf" if kind == DocumentKind.PDF else ".xml"
            yield ImportedDocument(
                filename=safe_filename(
                    part.filename, f"document-{uid}-{numbers[part.section]}{extension}"
                ),
                content_type=part.content_type,
                content=content,
                kind=kind,
                sender=sender,
                subject=subject,
                date=date,
                message_id=message_id,
                folder=self.folder,
                uidvalidity=session.uidvalidity,
                uid=uid,
                original_filename=part.filename,
            )

    def _mark_done(self, client: BoundedClient, uids: Sequence[int]) -> None:
        if not uids:
            return
        if self.move_to is not None:
            client.move(uids, self.move_to)
        elif self.mark:
            client.add_flags(uids, [self.mark])


def _maybe_document(part: Part) -> bool:
    return part.content_type in DOCUMENT_TYPES or (part.filename or "").lower().endswith(
        (".pdf", ".xml")
    )


def _envelope(envelope: Any) -> tuple[str, str, dt.datetime | None, str | None]:
    """Sender, subject, date and Message-ID from an ENVELOPE, whatever the server sent."""
    sender = ""
    addresses = getattr(envelope, "from_", None)
    if isinstance(addresses, tuple) and addresses:
        first = addresses[0]
        mailbox, host = text(getattr(first, "mailbox", None)), text(getattr(first, "host", None))
        sender = f"{mailbox}@{host}" if mailbox and host else mailbox
    date = getattr(envelope, "date", None)
    return (
        sender,
        text(getattr(envelope, "subject", None)),
        date if isinstance(date, dt.datetime) else None,
        text(getattr(envelope, "message_id", None)) or None,
    )
