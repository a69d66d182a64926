"""Storing a copy of each sent message in the tenant's Sent folder, exactly once."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import imapclient
import imapclient.exceptions

from ..errors import DeliveryError
from ..settings import ImapSettings
from .connection import close_imap, open_imap
from .folders import find_sent_folder, list_folders

__all__ = ["ArchiveOutcome", "SentArchiver", "files_own_sent_copy"]

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([\d:,]+)\]", re.IGNORECASE)
_MESSAGE_ID = re.compile(rb"^Message-ID:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
MAX_BATCH = 32  # messages archived together (one SEARCH, one MULTIAPPEND)
MAX_BATCH_BYTES = 8 * 1024 * 1024
_DATE = re.compile(rb"^Date:[ \t]*(.+?)\r?\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL)
# Submission servers that file a copy of what they relay in Sent themselves; archiving
# there would store every message twice.
_SELF_FILING_HOSTS = (
    "smtp.gmail.com",
    "smtp.googlemail.com",
    "smtp.office365.com",
    "smtp-mail.outlook.com",
    "outlook.office365.com",
)


def files_own_sent_copy(smtp_host: str) -> bool:
    """True for submission servers that put sent mail into Sent by themselves (Gmail, M365)."""
    return smtp_host.lower().rstrip(".") in _SELF_FILING_HOSTS


@attrs.frozen
class ArchiveOutcome:
    """What happened to the copy: archived (where, which UID) or why not."""

    archived: bool
    folder: str | None = None
    uid: int | None = None
    reason: str | None = None
    already_there: bool = False  # found by Message-ID: not appended again


def _with_bcc(data: bytes, bcc: Sequence[str]) -> bytes:
    """The transmitted bytes plus a Bcc header, so the tenant sees who got a blind copy."""
    if not bcc:
        return data
    return b"Bcc: " + ", ".join(bcc).encode("utf-8") + b"\r\n" + data


def _message_date(data: bytes) -> dt.datetime | None:
    header = data.split(b"\r\n\r\n", 1)[0]
    match = _DATE.search(header + b"\r\n")
    if match is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(match.group(1).decode("ascii", "replace"))
    except (TypeError, ValueError):
        return None


@attrs.define(eq=False)
class _Request:
    """One message waiting to be archived; `outcome` is set once it is settled."""

    data: bytes
    message_id: str
    date: dt.datetime | None
    outcome: ArchiveOutcome | None = None


def _uid_set(text: bytes) -> list[int]:
    """The UIDs of an APPENDUID uid-set such as b"5:7,9", in order (RFC 4315)."""
    uids: list[int] = []
    for part in text.split(b","):
        first, _, last = part.partition(b":")
        low, high = int(first), int(last or first)
        step = 1 if high >= low else -1
        uids.extend(range(low, high + step, step))
    return uids


def _appended_uids(response: Any, count: int) -> list[int | None]:
    if isinstance(response, tuple):  # multiappend: (typ, [data, ...])
        raw = b" ".join(item for item in response[1] if isinstance(item, bytes))
    else:
        raw = bytes(response)
    match = _APPENDUID.search(raw)
    if match is not None:
        uids = _uid_set(match.group(2))
        if len(uids) == count:
            return list(uids)
    return [None] * count


def _quoted(message_id: str) -> bytes:
    # Always a quoted string: imapclient leaves values like <a{3}b@x> unquoted.
    return b'"' + message_id.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


class SentArchiver:
    """Appends sent messages to the archive folder of one IMAP account.

    The folder is the one in `ImapSettings.folder`, else the special-use
    `\\Sent` folder, else a well-known name. Before appending it looks for the
    Message-ID, so a retried archive never stores a second copy. One IMAP
    session is kept open between messages (checked with NOOP when idle, reopened
    once when the server dropped it).

    Threads archiving at the same time are served together: while one batch is
    being stored, new requests wait, and the next batch (up to `max_batch`
    messages) costs one SEARCH for all their Message-IDs and one MULTIAPPEND
    (RFC 3502; with LITERAL+ a single round trip) where the server offers it,
    else one APPEND each. Failures are returned as an `ArchiveOutcome`, never
    raised.
    """

    def __init__(
        self,
        settings: ImapSettings,
        *,
        idle_check_after: float = 30.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.settings = settings
        self.idle_check_after = idle_check_after
        self.max_batch = max_batch
        self._changed = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._busy = False  # a thread is storing a batch
        self._client: imapclient.IMAPClient | None = None
        self._folder: str | None = None
        self._last_used = 0.0
        self._closed = False

    def archive(self, data: bytes, *, message_id: str, bcc: Sequence[str] = ()) -> ArchiveOutcome:
        """Store `data` (as transmitted) with \\Seen and the message's date."""
        request = _Request(_with_bcc(data, bcc), message_id, _message_date(data))
        with self._changed:
            if self._closed:
                return ArchiveOutcome(False, reason="the archiver was closed")
            self._pending.append(request)
            try:
                while self._busy and request.outcome is None:
                    self._changed.wait()
            except BaseException:  # interrupted while waiting: withdraw the request
                if request in self._pending:
                    self._pending.remove(request)
                raise
            if request.outcome is not None:
                return request.outcome
            self._busy = True
        batch: list[_Request] = []
        try:
            while request.outcome is None:
                batch = self._take_batch()
                self._store(batch)
                with self._changed:
                    self._changed.notify_all()
        except BaseException:
            for waiting in batch:  # interrupted: nobody else would settle these
                if waiting.outcome is None:
                    waiting.outcome = ArchiveOutcome(False, reason="archiving was interrupted")
            self._drop()
            raise
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
        return request.outcome

    def _take_batch(self) -> list[_Request]:
        with self._changed:
            batch: list[_Request] = []
            size = 0
            while self._pending and len(batch) < self.max_batch:
                if batch and size + len(self._pending[0].data) > MAX_BATCH_BYTES:
                    break
                batch.append(self._pending.popleft())
                size += len(batch[-1].data)
            if self._closed:
                for request in batch:
                    request.outcome = ArchiveOutcome(False, reason="the archiver was closed")
            return batch

    def _store(self, batch: list[_Request]) -> None:
        """Archive `batch`, settling every request in it; never raises an IMAP error."""

        def settle(reason: str) -> None:
            for request in batch:
                if request.outcome is None:
                    request.outcome = ArchiveOutcome(False, reason=reason)

        for attempt in (1, 2):
            if all(request.outcome is not None for request in batch):
                return
            try:
                client, reused = self._session()
            except DeliveryError as exc:
                settle(f"the IMAP server could not be used: {exc}")
                return
            try:
                self._archive(client, [r for r in batch if r.outcome is None])
            except (imapclient.exceptions.IMAPClientAbortError, OSError) as exc:
                self._drop()
                if attempt == 1 and reused:
                    continue  # an idle session the server had closed: once more, fresh
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                settle(f"the IMAP connection was lost ({detail})")
                return
            except imapclient.exceptions.IMAPClientError as exc:
                self._drop()
                settle(f"the IMAP server refused: {exc}")
                return
            self._last_used = time.monotonic()
            return

    def _session(self) -> tuple[imapclient.IMAPClient, bool]:
        client = self._client
        if client is not None and time.monotonic() - self._last_used > self.idle_check_after:
            try:
                client.noop()
            except (imapclient.exceptions.IMAPClientError, OSError):
                self._drop()
                client = None
        if client is not None:
            return client, True
        self._client = open_imap(self.settings)
        self._folder = None
        return self._client, False

    def _drop(self) -> None:
        if self._client is not None:
            close_imap(self._client)
        self._client = None
        self._folder = None

    def close(self) -> None:
        """LOGOUT from the kept session; archiving afterwards is refused (no new session)."""
        with self._changed:
            self._closed = True
            # A batch being stored finishes first (bounded by the IMAP time-outs).
            while self._busy:
                self._changed.wait(1.0)
            for request in self._pending:
                request.outcome = ArchiveOutcome(False, reason="the archiver was closed")
            self._pending.clear()
            self._changed.notify_all()
            self._drop()

    def _open_folder(self, client: imapclient.IMAPClient) -> tuple[str | None, str | None]:
        """The archive folder, selected; or None and why not."""
        if self._folder is not None:
            return self._folder, None
        folders = list_folders(client)
        folder = self.settings.folder
        if folder is not None:
            if folder not in {f.name for f in folders}:
                return None, f"the folder {folder!r} does not exist"
        else:
            folder = find_sent_folder(client, folders)
            if folder is None:
                return None, "no Sent folder was found; choose the archive folder"
        client.select_folder(folder)
        self._folder = folder
        return folder, None

    def _archive(self, client: imapclient.IMAPClient, batch: list[_Request]) -> None:
        folder, problem = self._open_folder(client)
        if folder is None:
            for request in batch:
                request.outcome = ArchiveOutcome(False, self.settings.folder, reason=problem)
            return
        found = self._find(client, sorted({r.message_id for r in batch}))
        todo: list[_Request] = []
        for request in batch:
            uid = found.get(request.message_id)
            if uid is not None:
                request.outcome = ArchiveOutcome(True, folder, uid, already_there=True)
            elif any(r.message_id == request.message_id for r in todo):
                request.outcome = ArchiveOutcome(True, folder, None, already_there=True)
            else:
                todo.append(request)
        if len(todo) > 1 and client.has_capability("MULTIAPPEND"):
            try:
                response = client.multiappend(folder, [_append_item(r) for r in todo])
            except imapclient.exceptions.IMAPClientAbortError:
                raise
            except imapclient.exceptions.IMAPClientError:
                pass  # refused as a whole (RFC 3502: none stored): one by one below
            else:
                for request, uid in zip(todo, _appended_uids(response, len(todo)), strict=True):
                    request.outcome = ArchiveOutcome(True, folder, uid)
                return
        for request in todo:
            try:
                response = client.append(
                    folder, request.data, flags=(imapclient.SEEN,), msg_time=request.date
                )
            except imapclient.exceptions.IMAPClientAbortError:
                raise
            except imapclient.exceptions.IMAPClientError as exc:
                request.outcome = ArchiveOutcome(
                    False, folder, reason=f"the IMAP server refused: {exc}"
                )
                continue
            (uid,) = _appended_uids(response, 1)
            request.outcome = ArchiveOutcome(True, folder, uid)

    def _find(self, client: imapclient.IMAPClient, message_ids: list[str]) -> dict[str, int]:
        """UIDs of messages already in the folder, by Message-ID: one SEARCH for all."""
        criteria = b"HEADER Message-ID " + _quoted(message_ids[-1])
        for message_id in reversed(message_ids[:-1]):
            criteria = b"OR HEADER Message-ID " + _quoted(message_id) + b" " + criteria
        uids = sorted(int(uid) for uid in client.search(criteria))
        if not uids:
            return {}
        if len(message_ids) == 1:
            return {message_ids[0]: uids[-1]}
        # HEADER matches substrings: read the Message-IDs back to pair them exactly.
        wanted = set(message_ids)
        found: dict[str, int] = {}
        section = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
        fetched = client.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        for uid in uids:
            header = fetched.get(uid, {}).get(section, b"") or b""
            match = _MESSAGE_ID.search(bytes(header).replace(b"\r\n ", b" "))
            value = match.group(1).strip().decode("ascii", "replace") if match else ""
            if value in wanted:
                found[value] = uid
        return found


def _append_item(request: _Request) -> dict[str, Any]:
    item: dict[str, Any] = {"msg": request.data, "flags": (imapclient.SEEN,)}
    if request.date is not None:
        item["date"] = request.date
    return item
