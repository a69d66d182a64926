"""IMAP: archiving sent mail into the tenant's Sent folder."""

from .archiver import ArchiveOutcome, SentArchiver, files_own_sent_copy
from .connection import close_imap, open_imap
from .folders import SENT_FOLDER_NAMES, Folder, find_sent_folder, list_folders
from .probe import probe_imap

__all__ = [
    "SENT_FOLDER_NAMES",
    "ArchiveOutcome",
    "Folder",
    "SentArchiver",
    "close_imap",
    "files_own_sent_copy",
    "find_sent_folder",
    "list_folders",
    "open_imap",
    "probe_imap",
]
