"""IMAP: archiving sent mail into the tenant's Sent folder, importing incoming invoices."""

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._filenames import safe_filename
    from .archiver import ArchiveOutcome, SentArchiver, files_own_sent_copy
    from .connection import ImapLimits, close_imap, open_imap
    from .documents import DocumentKind, detect_kind
    from .folders import SENT_FOLDER_NAMES, Folder, find_sent_folder, list_folders
    from .importer import Checkpoint, ImportBatch, ImportedDocument, InboxImporter
    from .probe import probe_imap

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
            ".archiver": ("ArchiveOutcome", "SentArchiver", "files_own_sent_copy"),
            ".connection": ("ImapLimits", "close_imap", "open_imap"),
            ".documents": ("DocumentKind", "detect_kind"),
            ".folders": ("SENT_FOLDER_NAMES", "Folder", "find_sent_folder", "list_folders"),
            ".importer": ("Checkpoint", "ImportBatch", "ImportedDocument", "InboxImporter"),
            ".probe": ("probe_imap",),
        },
        globals(),
    )
