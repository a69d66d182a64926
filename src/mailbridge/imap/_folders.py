"""Finding the tenant's Sent folder: SPECIAL-USE first, then well-known names.

LIST is sent through imaplib's public `xatom()`/`response()` on the bounded
wire and parsed with imapclient's public `parse_response`, so no private
imapclient or imaplib method is involved.
"""

from __future__ import annotations

from typing import Any

import attrs
import imapclient
import imapclient.exceptions
from imapclient import imap_utf7
from imapclient.response_parser import parse_response

from ..errors import ImapCommandFailed
from ._client import BoundedClient
from ._failures import PARSE_FAILURES, typed_error

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


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _name(value: Any) -> str | None:
    """A mailbox name from LIST, decoded from modified UTF-7; None when it cannot be."""
    if isinstance(value, int):  # a numeric name the parser read as a number
        return str(value)
    if not isinstance(value, (bytes, str)):
        return None
    try:
        name = str(imap_utf7.decode(value))
    except ValueError:  # invalid modified UTF-7 (UnicodeDecodeError, binascii.Error)
        return None
    return None if any("\ud800" <= ch <= "\udfff" for ch in name) else name


def _folders(data: list[Any]) -> list[Folder]:
    items = parse_response([item for item in data if item not in (b"", None)])
    folders = []
    for index in range(0, len(items) - 2, 3):
        flags, delimiter, raw_name = items[index : index + 3]
        name = _name(raw_name)
        if name is None or not isinstance(flags, tuple):
            continue  # a name imapclient could not address anyway
        texts = tuple(_text(f) for f in flags)
        special = next(
            (f for f in texts if f.encode() in SPECIAL_USE_FLAGS or f.lower() == "\\sent"), None
        )
        folders.append(
            Folder(name, None if delimiter is None else _text(delimiter), texts, special)
        )
    return folders


def _list(client: BoundedClient, command: str, *options: str) -> list[Folder]:
    wire = client.wire
    typ, data = wire.xatom(command, '""', '"*"', *options)
    if typ != "OK":
        raise imapclient.exceptions.IMAPClientError(f"{command} failed: {data!r}")
    _, listed = wire.response(command)
    return _folders(listed)


def list_folders(client: BoundedClient) -> list[Folder]:
    """Every folder with its special-use attribute.

    Asks with `LIST "" "*" RETURN (SPECIAL-USE)` (RFC 6154) where the server
    supports it, else plain LIST (whose flags often carry it anyway), then
    Gmail's old XLIST. Names that are not valid modified UTF-7 are left out.
    Raises typed errors only (`ImapCommandFailed`, `ImapConnectionLost`, ...).
    """
    try:
        if client.has_capability("SPECIAL-USE"):
            try:
                return _list(client, "LIST", "RETURN", "(SPECIAL-USE)")
            except (imapclient.exceptions.IMAPClientError, *PARSE_FAILURES) as exc:
                if not isinstance(typed_error(exc, "LIST"), ImapCommandFailed):
                    raise
                if client.wire.failure is not None:
                    raise
        folders = _list(client, "LIST")
        if not any(f.special_use for f in folders) and client.has_capability("XLIST"):
            folders = _list(client, "XLIST")
    except (imapclient.exceptions.IMAPClientError, OSError, *PARSE_FAILURES) as exc:
        raise client.typed_error(exc, "LIST") from exc
    return folders


def find_sent_folder(client: BoundedClient, folders: list[Folder] | None = None) -> str | None:
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
        except ImapCommandFailed:  # refused or unreadable: the names alone then
            pass
    for name in SENT_FOLDER_NAMES:
        for prefix in dict.fromkeys([*prefixes, "INBOX.", "INBOX/"]):
            found = by_name.get((prefix + name).casefold())
            if found is not None:
                return found.name
    return None
