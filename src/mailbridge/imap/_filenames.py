"""File names from incoming mail made safe to use as a name in a local directory.

The sender chooses the name of an attachment: ``../../etc/cron.d/x``, ``CON.pdf``,
``invoice\u202efdp.exe`` or 10,000 characters. What is returned here is one plain
name component that is the same on POSIX and Windows file systems.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_FILENAME_BYTES", "safe_filename"]

MAX_FILENAME_BYTES = 200  # UTF-8 bytes: under the 255 most file systems allow, room for a suffix
_MAX_EXTENSION = 16  # characters of an extension kept when a name is shortened
_UNSAFE = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')  # Windows forbids these; control characters
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{stem}{n}" for stem in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]}
)
# Unicode categories dropped: controls, format characters (bidi overrides, zero-width
# marks), line/paragraph separators, surrogates, private use and unassigned code points.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _truncate(name: str) -> str:
    """`name` within MAX_FILENAME_BYTES, keeping a short extension."""
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .") + suffix


def safe_filename(original: str | None, fallback: str) -> str:
    """A safe file name for `original`, or `fallback` when nothing usable is left.

    The last path component only (both ``/`` and ``\\`` separate), NFC-normalised,
    without control, format (bidi override) and Windows-forbidden characters, without
    leading dots or spaces and trailing dots or spaces, not a Windows device name
    (``CON``, ``COM1.pdf``, ...), and at most MAX_FILENAME_BYTES bytes of UTF-8 with its
    extension kept.
    """
    if not original:
        return fallback
    name = unicodedata.normalize("NFC", original)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    name = _UNSAFE.sub("_", name)
    name = " ".join(name.split())  # tabs, runs of spaces, odd spaces: one plain space
    name = name.strip(" .")
    if not name:
        return fallback
    if name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        name = f"_{name}"
    name = _truncate(name)
    return name or fallback
