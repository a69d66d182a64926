"""Finding the tenant's Sent folder: SPECIAL-USE first, then well-known names."""

from __future__ import annotations

from typing import Any

import attrs
import imapclient
import imapclient.exceptions

__all__ = ["SENT_FOLDER_NAMES", "Folder", "find_sent_folder", "list_folders"]

# What Sent is called where servers do not flag it (RFC 6154), across languages.
SENT_FOLDER_NAMES = (
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Sent Mail",
    "Sent-Mail",
    "[Gmail]/Sent Mail",
    "[Google Mail]/Sent Mail",
    "Gesendet",
    "Gesendete Objekte",
    "Gesendete Elemente",
    "Gesendete Nachrichten",
    "Envoyés",
    "Éléments envoyés",
    "Messages envoyés",
    "Inviati",
    "Posta inviata",
    "Elementi inviati",
    "Enviados",
    "Elementos enviados",
    "Enviadas",
    "Itens enviados",
    "Verzonden",
    "Verzonden items",
    "Skickat",
    "Skickade objekt",
    "Sendt",
    "Sendte elementer",
    "Lähetetyt",
    "Wysłane",
    "Elementy wysłane",
    "Odeslaná pošta",
    "Odoslané",
    "Elküldött",
    "Trimise",
    "Отправленные",
    "Gönderilmiş Öğeler",
)
SPECIAL_USE_FLAGS = (
    b"\\All",
    b"\\Archive",
    b"\\Drafts",
    b"\\Flagged",
    b"\\Junk",
    b"\\Sent",
    b"\\Trash",
)


@attrs.frozen
class Folder:
    """A mailbox on the server: its name (decoded), delimiter, and special use if any."""

    name: str
    delimiter: str | None
    flags: tuple[str, ...] = ()
    special_use: str | None = None  # e.g. "\\Sent"

    @property
    def selectable(self) -> bool:
        """False for \\Noselect / \\NonExistent containers."""
        return not any(f.lower() in ("\\noselect", "\\nonexistent") for f in self.flags)


def _folders(entries: list[tuple[Any, Any, Any]]) -> list[Folder]:
    folders = []
    for flags, delimiter, name in entries:
        texts = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in flags)
        special = next(
            (f for f in texts if f.encode() in SPECIAL_USE_FLAGS or f.lower() == "\\sent"), None
        )
        folders.append(
            Folder(
                str(name),
                delimiter.decode() if isinstance(delimiter, bytes) else delimiter,
                texts,
                special,
            )
        )
    return folders


def list_folders(client: imapclient.IMAPClient) -> list[Folder]:
    """Every folder with its special-use attribute.

    Asks with `LIST "" "*" RETURN (SPECIAL-USE)` (RFC 6154) where the server
    supports it, else plain LIST (whose flags often carry it anyway), then
    Gmail's old XLIST.
    """
    if client.has_capability("SPECIAL-USE"):
        try:
            imap = client._imap  # imapclient has no API for LIST return options
            typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
            if typ == "OK":
                typ, data = imap._untagged_response(typ, data, "LIST")
                return _folders(client._proc_folder_list(data))
        except (imapclient.exceptions.IMAPClientError, OSError, ValueError):
            pass
    folders = _folders(client.list_folders())
    if not any(f.special_use for f in folders) and client.has_capability("XLIST"):
        folders = _folders(client.xlist_folders())
    return folders


def find_sent_folder(
    client: imapclient.IMAPClient, folders: list[Folder] | None = None
) -> str | None:
    """The Sent folder: flagged \\Sent, else a well-known name (in the personal namespace)."""
    folders = folders if folders is not None else list_folders(client)
    for folder in folders:
        if folder.special_use and folder.special_use.lower() == "\\sent" and folder.selectable:
            return folder.name
    by_name = {folder.name.casefold(): folder for folder in folders if folder.selectable}
    prefixes = [""]
    if client.has_capability("NAMESPACE"):
        try:
            personal = client.namespace().personal or ()
            prefixes = [str(prefix) for prefix, _ in personal] + [""]
        except imapclient.exceptions.IMAPClientError:
            pass
    for name in SENT_FOLDER_NAMES:
        for prefix in dict.fromkeys([*prefixes, "INBOX.", "INBOX/"]):
            found = by_name.get((prefix + name).casefold())
            if found is not None:
                return found.name
    return None
