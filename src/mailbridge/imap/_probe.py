"""The IMAP half of the connection test."""

from __future__ import annotations

import attrs

from .._results import ConnectionReport, Step
from ..diagnosis import Category, Diagnosis
from ..diagnostics import security_label
from ..errors import DeliveryError
from ..settings import ImapSettings, Security
from ._connection import ImapLimits, close_imap, open_imap
from ._folders import find_sent_folder, list_folders

__all__ = ["probe_imap"]

_MODE_PROBLEMS = frozenset(
    {
        Category.EXPECTED_PLAINTEXT,
        Category.TIMEOUT,
        Category.TLS_HANDSHAKE,
        Category.PROTOCOL,
        Category.CONNECTION_LOST,
        Category.STARTTLS_NOT_OFFERED,
    }
)


def probe_imap(
    settings: ImapSettings, *, try_alternative: bool = True, limits: ImapLimits | None = None
) -> ConnectionReport:
    """Connect, secure, log in and find the archive folder, reporting each step.

    When the security mode seems not to match the port, the other mode is tried
    on the same port and, if it works, returned as `alternative`. `limits` bounds
    each command (default `ImapLimits()`).
    """
    steps: list[Step] = []
    try:
        client = open_imap(settings, observer=steps.append, limits=limits)
    except DeliveryError as exc:
        diagnosis = exc.diagnosis
        alternative = None
        if (
            try_alternative
            and diagnosis.category in _MODE_PROBLEMS
            and (settings.security != Security.NONE)
        ):
            other = (
                Security.STARTTLS
                if settings.security == Security.IMPLICIT_TLS
                else Security.IMPLICIT_TLS
            )
            candidate = attrs.evolve(
                settings, security=other, command_timeout=min(settings.command_timeout, 10.0)
            )
            result = probe_imap(candidate, try_alternative=False, limits=limits)
            if any(step.name == "login" and step.ok for step in result.steps) or result.ok:
                alternative = attrs.evolve(settings, security=other)
                label = security_label(other)
                diagnosis = Diagnosis(
                    Category.EXPECTED_IMPLICIT_TLS
                    if other == Security.IMPLICIT_TLS
                    else Category.EXPECTED_PLAINTEXT,
                    f"The IMAP server on port {settings.port} uses {label}: choose {label}.",
                    (f"A test with {label} on port {settings.port} worked.",),
                )
        return ConnectionReport(
            False, tuple(steps), diagnosis, exc, alternative=None, imap_alternative=alternative
        )
    try:
        folders = list_folders(client)
        folder = settings.folder or find_sent_folder(client, folders)
        found = folder is not None and folder in {f.name for f in folders}
        steps.append(Step("folder", found, 0.0, folder or "no Sent folder found"))
    except DeliveryError as exc:  # list_folders raises typed errors only
        steps.append(Step("folder", False, 0.0, f"the server failed listing folders: {exc}"))
        return ConnectionReport(
            False,
            tuple(steps),
            Diagnosis(
                exc.diagnosis.category,
                "The IMAP server failed while listing the folders.",
                exc.diagnosis.hints
                or ("Try again; if it keeps happening, the server may be overloaded.",),
            ),
            exc,
        )
    finally:
        close_imap(client)
    missing = (
        None
        if found
        else Diagnosis(
            Category.PROTOCOL,
            "No archive folder was found on the IMAP account.",
            ("Choose the folder for sent mail in the settings.",),
        )
    )
    return ConnectionReport(found, tuple(steps), missing)
