"""Storing a copy of each sent message in the tenant's Sent folder, exactly once."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
import time
from collections.abc import Sequence

import attrs
import imapclient
import imapclient.exceptions

from ..errors import DeliveryError
from ..settings import ImapSettings
from .connection import close_imap, open_imap
from .folders import find_sent_folder, list_folders

__all__ = ["ArchiveOutcome", "SentArchiver", "files_own_sent_copy"]

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
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


class SentArchiver:
    """Appends sent messages to the archive folder of one IMAP account.

    The folder is the one in `ImapSettings.folder`, else the special-use
    `\\Sent` folder, else a well-known name. Before appending it looks for the
    Message-ID, so a retried archive never stores a second copy. One IMAP
    session is kept open between messages (checked with NOOP when idle, reopened
    once when the server dropped it) and archives run one at a time, so the
    look-up and the append of one message never interleave with another's.
    Failures are returned as an `ArchiveOutcome`, never raised.
    """

    def __init__(self, settings: ImapSettings, *, idle_check_after: float = 30.0) -> None:
        self.settings = settings
        self.idle_check_after = idle_check_after
        self._lock = threading.Lock()
        self._client: imapclient.IMAPClient | None = None
        self._folder: str | None = None
        self._last_used = 0.0
        self._closed = False

    def archive(self, data: bytes, *, message_id: str, bcc: Sequence[str] = ()) -> ArchiveOutcome:
        """Store `data` (as transmitted) with \\Seen and the message's date."""
        with self._lock:
            if self._closed:
                return ArchiveOutcome(False, reason="the archiver was closed")
            for attempt in (1, 2):
                try:
                    client, reused = self._session()
                except DeliveryError as exc:
                    return ArchiveOutcome(False, reason=f"the IMAP server could not be used: {exc}")
                try:
                    outcome = self._archive(client, data, message_id, bcc)
                except (imapclient.exceptions.IMAPClientAbortError, OSError) as exc:
                    self._drop()
                    if attempt == 1 and reused:
                        continue  # an idle session the server had closed: once more, fresh
                    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    return ArchiveOutcome(False, reason=f"the IMAP connection was lost ({detail})")
                except imapclient.exceptions.IMAPClientError as exc:
                    self._drop()
                    return ArchiveOutcome(False, reason=f"the IMAP server refused: {exc}")
                self._last_used = time.monotonic()
                return outcome
            raise AssertionError("unreachable")  # pragma: no cover

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
        with self._lock:
            self._closed = True
            self._drop()

    def _archive(
        self, client: imapclient.IMAPClient, data: bytes, message_id: str, bcc: Sequence[str]
    ) -> ArchiveOutcome:
        folder = self._folder
        if folder is None:
            folders = list_folders(client)
            folder = self.settings.folder
            if folder is not None:
                if folder not in {f.name for f in folders}:
                    return ArchiveOutcome(
                        False, folder, reason=f"the folder {folder!r} does not exist"
                    )
            else:
                folder = find_sent_folder(client, folders)
                if folder is None:
                    return ArchiveOutcome(
                        False, reason="no Sent folder was found; choose the archive folder"
                    )
            client.select_folder(folder)
            self._folder = folder
        # Always a quoted string: imapclient leaves values like <a{3}b@x> unquoted.
        quoted = message_id.replace("\\", "\\\\").replace('"', '\\"')
        existing = client.search(f'HEADER Message-ID "{quoted}"'.encode())
        if existing:
            return ArchiveOutcome(True, folder, int(existing[-1]), already_there=True)
        response = client.append(
            folder, _with_bcc(data, bcc), flags=(imapclient.SEEN,), msg_time=_message_date(data)
        )
        match = _APPENDUID.search(response if isinstance(response, bytes) else bytes(response))
        return ArchiveOutcome(True, folder, int(match.group(2)) if match else None)
