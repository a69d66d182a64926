"""Importing incoming invoices from an IMAP folder, exactly once."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.header
import quopri
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import imapclient

from ..settings import ImapSettings
from .connection import close_imap, open_imap
from .documents import DocumentKind, detect_kind

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


def _text(value: Any) -> str:
    if value is None:
        return ""
    raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (UnicodeError, ValueError, LookupError):
        return raw


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
            text = urllib.parse.unquote(
                encoded or text, encoding=charset or "utf-8", errors="replace"
            )
        params[name] = text
    return params


def _parts(structure: Any, prefix: str = "") -> Iterator[_Part]:
    """Leaf parts of a BODYSTRUCTURE with their section numbers ("1", "2.1", ...)."""
    if isinstance(structure[0], list):  # multipart: (children, subtype, ...)
        for number, child in enumerate(structure[0], start=1):
            yield from _parts(child, f"{prefix}{number}.")
        return
    maintype, subtype = _text(structure[0]).lower(), _text(structure[1]).lower()
    params = _params(structure[2])
    filename = params.get("name")
    for extra in structure[7:]:  # the disposition is among the extension data
        if isinstance(extra, (tuple, list)) and len(extra) == 2 and isinstance(extra[0], bytes):
            filename = _params(extra[1]).get("filename") or filename
    encoding = _text(structure[5]).lower()
    yield _Part(prefix.rstrip(".") or "1", f"{maintype}/{subtype}", encoding, filename)


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
            if int(selected[b"UIDVALIDITY"]) == batch.checkpoint.uidvalidity:
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

        Bounded: ends after `max_seconds`, or as soon as `stop` is set (checked
        at least every `idle_seconds`, which stays under the 29 minutes after
        which servers may drop an idle client).
        """
        deadline = time.monotonic() + max_seconds
        stop = stop or threading.Event()
        while not stop.is_set() and time.monotonic() < deadline:
            batch = self.run(checkpoint)
            checkpoint = batch.checkpoint
            if batch.uids:
                yield batch
            client = open_imap(self.settings)
            try:
                client.select_folder(self.folder, readonly=True)
                if not client.has_capability("IDLE"):
                    stop.wait(min(idle_seconds, max(0.0, deadline - time.monotonic())))
                    continue
                client.idle()
                try:
                    wait = min(idle_seconds, max(0.0, deadline - time.monotonic()))
                    ends = time.monotonic() + wait
                    while not stop.is_set() and time.monotonic() < ends:
                        if any(
                            r[1] == b"EXISTS" for r in client.idle_check(timeout=0.2) if len(r) > 1
                        ):
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
        for start in range(0, len(uids), self.batch_size):
            batch = uids[start : start + self.batch_size]
            documents.extend(self._import_batch(client, batch, uidvalidity))
        newest = max(uids, default=last_uid)
        return ImportBatch(tuple(documents), Checkpoint(uidvalidity, newest), tuple(uids), changed)

    def _import_batch(
        self, client: imapclient.IMAPClient, uids: Sequence[int], uidvalidity: int
    ) -> Iterator[ImportedDocument]:
        response = client.fetch(uids, ["BODYSTRUCTURE", "ENVELOPE", "RFC822.SIZE"])
        for uid in uids:
            data = response.get(uid)
            if data is None:
                continue
            wanted = [
                p
                for p in _parts(data[b"BODYSTRUCTURE"])
                if p.content_type in DOCUMENT_TYPES
                or (p.filename or "").lower().endswith((".pdf", ".xml"))
            ]
            if not wanted:
                continue
            envelope = data[b"ENVELOPE"]
            sender = ""
            if envelope.from_:
                address = envelope.from_[0]
                sender = f"{_text(address.mailbox)}@{_text(address.host)}"
            keys = [f"BODY.PEEK[{p.section}]" for p in wanted]
            bodies = client.fetch([uid], keys).get(uid, {})
            for number, part in enumerate(wanted, start=1):
                raw = bodies.get(f"BODY[{part.section}]".encode())
                if raw is None or len(raw) > self.max_part_bytes * 2:
                    continue
                content = _decode(raw, part.encoding)
                kind = detect_kind(content) if content else None
                if content is None or kind is None:
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
