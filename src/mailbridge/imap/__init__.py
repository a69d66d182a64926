"""IMAP: archiving sent mail into the tenant's Sent folder, importing incoming invoices."""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._archiver import ArchiveOutcome, SentArchiver, files_own_sent_copy
    from ._connection import ImapLimits, close_imap, open_imap
    from ._documents import DocumentKind, detect_kind
    from ._filenames import safe_filename
    from ._folders import SENT_FOLDER_NAMES, Folder, find_sent_folder, list_folders
    from ._importer import Checkpoint, ImportBatch, ImportedDocument, InboxImporter
    from ._probe import probe_imap

__all__ = [
    "SENT_FOLDER_NAMES",
    "ArchiveOutcome",
    "Checkpoint",
    "DocumentKind",
    "Folder",
    "ImapLimits",
    "ImportBatch",
    "ImportedDocument",
    "InboxImporter",
    "SentArchiver",
    "close_imap",
    "detect_kind",
    "files_own_sent_copy",
    "find_sent_folder",
    "list_folders",
    "open_imap",
    "probe_imap",
    "safe_filename",
]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._filenames": ("safe_filename",),
            "._archiver": ("ArchiveOutcome", "SentArchiver", "files_own_sent_copy"),
            "._connection": ("ImapLimits", "close_imap", "open_imap"),
            "._documents": ("DocumentKind", "detect_kind"),
            "._folders": ("SENT_FOLDER_NAMES", "Folder", "find_sent_folder", "list_folders"),
            "._importer": ("Checkpoint", "ImportBatch", "ImportedDocument", "InboxImporter"),
            "._probe": ("probe_imap",),
        },
        globals(),
    )
