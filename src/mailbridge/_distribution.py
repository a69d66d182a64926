"""The distribution's name on the package index and its version.

The import package is `mailbridge`; the name `mailbridge` on the public index
belongs to an unrelated project, so this one is published as `mailbridge-documents`.
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "install_hint", "version"]

DISTRIBUTION = "mailbridge-documents"


def install_hint(extra: str) -> str:
    """The pip command that installs `extra`, e.g. `pip install 'mailbridge-documents[testing]'`."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def version() -> str:
    """The installed version from the package metadata, or "unknown" when not installed."""
    import importlib.metadata  # here: it loads `email` and more, for the version only

    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (run from a checkout that is not installed)"
