"""Storing a copy of each sent message in the tenant's Sent folder, exactly once."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
from collections.abc import Sequence

import attrs
import imapclient
import imapclient.exceptions

from ..errors import DeliveryError
from ..settings import ImapSettings
from .connection import close_imap, open_imap
from .folders import find_sent_folder, list_folders

__all__ = ["ArchiveOutcome", "SentArchiver", "files_own_sent_copy"]

LOCK_STRIPES = 64
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
    Message-ID, so a retried archive never stores a second copy. Failures are
    returned as an `ArchiveOutcome`, never raised.
    """

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        # Striped locks: the same Message-ID always maps to the same lock, memory stays fixed.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def archive(self, data: bytes, *, message_id: str, bcc: Sequence[str] = ()) -> ArchiveOutcome:
        """Store `data` (as transmitted) with \\Seen and the message's date.

        Two archives of the same message never run at once in this process, so
        the look-up for its Message-ID and the append cannot interleave.
        """
        with self._lock_for(message_id):
            return self._archive_locked(data, message_id, bcc)

    def _lock_for(self, message_id: str) -> threading.Lock:
        return self._locks[hash(message_id) % LOCK_STRIPES]

    def _archive_locked(self, data: bytes, message_id: str, bcc: Sequence[str]) -> ArchiveOutcome:
        try:
            client = open_imap(self.settings)
        except DeliveryError as exc:
            return ArchiveOutcome(False, reason=f"the IMAP server could not be used: {exc}")
        try:
            return self._archive(client, data, message_id, bcc)
        except imapclient.exceptions.IMAPClientAbortError as exc:
            return ArchiveOutcome(False, reason=f"the IMAP connection was lost ({exc})")
        except imapclient.exceptions.IMAPClientError as exc:
            return ArchiveOutcome(False, reason=f"the IMAP server refused: {exc}")
        except OSError as exc:
            return ArchiveOutcome(
                False, reason=f"the IMAP connection was lost ({exc.strerror or type(exc).__name__})"
            )
        finally:
            close_imap(client)

    def _archive(
        self, client: imapclient.IMAPClient, data: bytes, message_id: str, bcc: Sequence[str]
    ) -> ArchiveOutcome:
        folders = list_folders(client)
        folder = self.settings.folder
        if folder is not None:
            if folder not in {f.name for f in folders}:
                return ArchiveOutcome(False, folder, reason=f"the folder {folder!r} does not exist")
        else:
            folder = find_sent_folder(client, folders)
            if folder is None:
                return ArchiveOutcome(
                    False, reason="no Sent folder was found; choose the archive folder"
                )
        client.select_folder(folder)
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
