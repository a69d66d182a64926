"""Importing incoming invoices from an IMAP folder, exactly once."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.errors
import email.header
import quopri
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import imapclient
import imapclient.exceptions

from ..errors import DeliveryError, UidValidityChanged
from ..settings import ImapSettings
from .connection import close_imap, open_imap
from .documents import DocumentKind, detect_kind

__all__ = ["Checkpoint", "ImportBatch", "ImportedDocument", "InboxImporter"]

IMPORTED_KEYWORD = "$Imported"
MAX_MIME_DEPTH = 10
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
    """One document attached to an incoming message."""

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


@attrs.frozen
class ImportBatch:
    """The documents of one import run and the checkpoint to store afterwards."""

    documents: tuple[ImportedDocument, ...]
    checkpoint: Checkpoint
    uids: tuple[int, ...] = ()  # the messages scanned, marked by `commit()`
    uidvalidity_changed: bool = False
    problems: tuple[tuple[int, str], ...] = ()  # (UID, what could not be imported and why)

    @property
    def messages_scanned(self) -> int:
        """How many new messages were looked at."""
        return len(self.uids)


@attrs.frozen
class _Part:
    section: str
    content_type: str
    encoding: str
    filename: str | None
    size: int = 0  # encoded size, from BODYSTRUCTURE


def _text(value: Any) -> str:
    if value is None:
        return ""
    raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (UnicodeError, ValueError, LookupError, email.errors.MessageError):
        return raw  # a broken encoded word in someone's mail: keep the raw text


def _params(value: Any) -> dict[str, str]:
    """BODYSTRUCTURE parameters; RFC 2231 `filename*=utf-8''...` values are decoded."""
    if not isinstance(value, (tuple, list)):
        return {}
    items = list(value)
    params = {}
    for key, raw in zip(items[::2], items[1::2], strict=False):
        name, text = _text(key).lower(), _text(raw)
        if name.endswith("*"):
            name = name.rstrip("*")
            charset, _, rest = text.partition("'")
            _, _, encoded = rest.partition("'")
            try:
                text = urllib.parse.unquote(
                    encoded or text, encoding=charset or "utf-8", errors="replace"
                )
            except LookupError:  # an unknown charset named by the sender
                text = urllib.parse.unquote(encoded or text, errors="replace")
        params[name] = text
    return params


def _parts(structure: Any, prefix: str = "", depth: int = 0) -> Iterator[_Part]:
    """Leaf parts of a BODYSTRUCTURE with their section numbers ("1", "2.1", ...).

    Forwarded messages (message/rfc822) are entered, so an invoice forwarded as
    an attachment is found too.
    """
    if depth > MAX_MIME_DEPTH:
        return
    if isinstance(structure[0], list):  # multipart: (children, subtype, ...)
        for number, child in enumerate(structure[0], start=1):
            yield from _parts(child, f"{prefix}{number}.", depth + 1)
        return
    maintype, subtype = _text(structure[0]).lower(), _text(structure[1]).lower()
    section = prefix.rstrip(".") or "1"
    if (maintype, subtype) == ("message", "rfc822") and len(structure) > 8:
        inner = structure[8]
        if isinstance(inner[0], list):
            yield from _parts(inner, f"{section}.", depth + 1)
        else:
            yield from _parts(inner, f"{section}.1.", depth + 1)
        return
    params = _params(structure[2])
    filename = params.get("name")
    for extra in structure[7:]:  # the disposition is among the extension data
        if isinstance(extra, (tuple, list)) and len(extra) == 2 and isinstance(extra[0], bytes):
            filename = _params(extra[1]).get("filename") or filename
    encoding = _text(structure[5]).lower()
    size = structure[6] if isinstance(structure[6], int) else 0
    yield _Part(section, f"{maintype}/{subtype}", encoding, filename, size)


def _decode(data: bytes, encoding: str) -> bytes | None:
    try:
        if encoding == "base64":
            return base64.b64decode(data)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return None
    return data


class InboxImporter:
    """Finds documents (PDF, XML e-invoices) in one folder and imports each exactly once.

    Two steps, so that nothing is lost between the server and your storage:
    `fetch(checkpoint)` reads what is new (messages after the checkpoint and not
    yet marked) without changing anything; after storing the documents,
    `commit(batch)` marks those messages (keyword `mark`, default `$Imported`,
    or a move to `move_to`) and you persist `batch.checkpoint`. `run()` does
    both at once. Only BODYSTRUCTURE and the needed attachment parts are
    downloaded, in batches of `batch_size` messages.
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
    ) -> None:
        self.settings = settings
        self.folder = folder
        self.mark = mark
        self.move_to = move_to
        self.batch_size = batch_size
        self.max_part_bytes = max_part_bytes

    def fetch(self, checkpoint: Checkpoint | None = None) -> ImportBatch:
        """The documents that arrived since `checkpoint`; changes nothing on the server."""
        client = open_imap(self.settings)
        try:
            return self._fetch(client, checkpoint)
        finally:
            close_imap(client)

    def commit(self, batch: ImportBatch) -> Checkpoint:
        """Mark the messages of `batch` as imported; returns the checkpoint to persist."""
        client = open_imap(self.settings)
        try:
            selected = client.select_folder(self.folder)
            if int(selected[b"UIDVALIDITY"]) != batch.checkpoint.uidvalidity:
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
            try:
                self._wait_for_mail(stop, min(idle_seconds, max(0.0, deadline - time.monotonic())))
            except (DeliveryError, imapclient.exceptions.IMAPClientError, OSError):
                stop.wait(min(5.0, max(0.0, deadline - time.monotonic())))  # then reconnect

    def _wait_for_mail(self, stop: threading.Event, wait: float) -> None:
        """IDLE until new mail arrives, `wait` seconds pass, or `stop` is set."""
        client = open_imap(self.settings)
        try:
            client.select_folder(self.folder, readonly=True)
            if not client.has_capability("IDLE"):
                stop.wait(wait)
                return
            client.idle()
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

    def _fetch(self, client: imapclient.IMAPClient, checkpoint: Checkpoint | None) -> ImportBatch:
        selected = client.select_folder(self.folder, readonly=True)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        changed = checkpoint is not None and checkpoint.uidvalidity != uidvalidity
        criteria: list[Any] = ["NOT", "KEYWORD", self.mark] if self.mark else ["ALL"]
        last_uid = 0
        if checkpoint is not None and not changed:
            # After a UIDVALIDITY change the UIDs mean nothing: the keyword alone decides.
            last_uid = checkpoint.last_uid
            criteria = ["UID", f"{last_uid + 1}:*", *criteria]
        uids = sorted(uid for uid in client.search(criteria) if uid > last_uid)
        documents: list[ImportedDocument] = []
        problems: list[tuple[int, str]] = []
        for start in range(0, len(uids), self.batch_size):
            batch = uids[start : start + self.batch_size]
            documents.extend(self._import_batch(client, batch, uidvalidity, problems))
        newest = max(uids, default=last_uid)
        return ImportBatch(
            tuple(documents),
            Checkpoint(uidvalidity, newest),
            tuple(uids),
            changed,
            tuple(problems),
        )

    def _import_batch(
        self,
        client: imapclient.IMAPClient,
        uids: Sequence[int],
        uidvalidity: int,
        problems: list[tuple[int, str]],
    ) -> Iterator[ImportedDocument]:
        response = client.fetch(uids, ["BODYSTRUCTURE", "ENVELOPE", "RFC822.SIZE"])
        for uid in uids:
            data = response.get(uid)
            if data is None:
                continue
            try:
                yield from self._documents_of(client, uid, data, uidvalidity, problems)
            except (imapclient.exceptions.IMAPClientAbortError, OSError):
                raise  # the connection is gone: the whole run fails, nothing is marked
            except Exception as exc:
                problems.append((uid, f"could not be read: {type(exc).__name__}: {exc}"))

    def _documents_of(
        self,
        client: imapclient.IMAPClient,
        uid: int,
        data: Any,
        uidvalidity: int,
        problems: list[tuple[int, str]],
    ) -> Iterator[ImportedDocument]:
        wanted = [
            p
            for p in _parts(data[b"BODYSTRUCTURE"])
            if p.content_type in DOCUMENT_TYPES
            or (p.filename or "").lower().endswith((".pdf", ".xml"))
        ]
        if not wanted:
            return
        envelope = data[b"ENVELOPE"]
        sender = ""
        if envelope.from_:
            address = envelope.from_[0]
            sender = f"{_text(address.mailbox)}@{_text(address.host)}"
        too_big = [p for p in wanted if p.size > self.max_part_bytes * 2]
        for part in too_big:
            problems.append(
                (
                    uid,
                    f"{part.filename or part.section}: {part.size} bytes, "
                    f"over the limit of {self.max_part_bytes}",
                )
            )
        wanted = [p for p in wanted if p not in too_big]
        keys = [f"BODY.PEEK[{p.section}]" for p in wanted]
        bodies = client.fetch([uid], keys).get(uid, {}) if keys else {}
        for number, part in enumerate(wanted, start=1):
            raw = bodies.get(f"BODY[{part.section}]".encode())
            content = _decode(raw, part.encoding) if raw is not None else None
            if content is None or len(content) > self.max_part_bytes:
                problems.append((uid, f"{part.filename or part.section}: not readable"))
                continue
            kind = detect_kind(content)
            if kind is None:
                if part.content_type != "application/octet-stream":
                    problems.append(
                        (
                            uid,
                            f"{part.filename or part.section}: "
                            f"{part.content_type} that is no PDF or XML",
                        )
                    )
                continue
            extension = ".pdf" if kind == DocumentKind.PDF else ".xml"
            yield ImportedDocument(
                filename=part.filename or f"document-{uid}-{number}{extension}",
                content_type=part.content_type,
                content=content,
                kind=kind,
                sender=sender,
                subject=_text(envelope.subject),
                date=envelope.date,
                message_id=_text(envelope.message_id) or None,
                folder=self.folder,
                uidvalidity=uidvalidity,
                uid=uid,
            )

    def _mark_done(self, client: imapclient.IMAPClient, uids: Sequence[int]) -> None:
        if not uids:
            return
        if self.move_to is not None:
            client.move(uids, self.move_to)
        elif self.mark:
            client.add_flags(uids, [self.mark])
