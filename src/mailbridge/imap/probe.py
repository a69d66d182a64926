"""The IMAP half of the connection test."""

from __future__ import annotations

from ..errors import DeliveryError
from ..settings import ImapSettings
from ..smtp.connection import Step
from ..smtp.probe import ConnectionReport
from .connection import close_imap, open_imap
from .folders import find_sent_folder, list_folders

__all__ = ["probe_imap"]


def probe_imap(settings: ImapSettings) -> ConnectionReport:
    """Connect, secure, log in and find the archive folder, reporting each step."""
    steps: list[Step] = []
    try:
        client = open_imap(settings, observer=steps.append)
    except DeliveryError as exc:
        return ConnectionReport(False, tuple(steps), exc.diagnosis, exc)
    try:
        folders = list_folders(client)
        folder = settings.folder or find_sent_folder(client, folders)
        found = folder is not None and folder in {f.name for f in folders}
        steps.append(Step("folder", found, 0.0, folder or "no Sent folder found"))
    finally:
        close_imap(client)
    return ConnectionReport(found, tuple(steps))
