"""Result value types shared by SMTP and IMAP code: a leaf module (no protocol imports).

`Step` (one step of opening a connection), `ConnectionReport` (what a connection
test found) and `Transaction` (the outcome of one accepted message) are public
through `mailbridge` and `mailbridge.smtp`; IMAP code imports them from here, so
it never imports SMTP code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs

from .diagnosis import Diagnosis
from .errors import DeliveryError
from .reply import SmtpReply
from .settings import ImapSettings, SmtpSettings

if TYPE_CHECKING:
    from .deliverability import BlacklistReport

__all__ = ["ConnectionReport", "Step", "Transaction"]


@attrs.frozen
class Step:
    """One step of opening a connection, with its outcome and duration."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@contextmanager
def timed_step(
    observer: Callable[[Step], None] | None, name: str, detail: str = ""
) -> Iterator[list[str]]:
    """Time the block as step `name` and tell `observer` how it ended: `note[0]` set
    inside is the detail of a success; a failure's detail is the exception."""
    started = time.perf_counter()
    note = [detail]
    try:
        yield note
    except BaseException as exc:
        if observer:
            observer(Step(name, False, time.perf_counter() - started, str(exc)))
        raise
    if observer:
        observer(Step(name, True, time.perf_counter() - started, note[0]))


@attrs.frozen
class Transaction:
    """The outcome of one accepted message: who got it, who was refused, the final reply."""

    accepted: tuple[str, ...]
    refused: dict[str, SmtpReply]
    reply: SmtpReply


@attrs.frozen
class ConnectionReport:
    """What a connection test found.

    `ok` is True when every step worked. `steps` lists resolve, connect, TLS,
    greeting, EHLO, STARTTLS and AUTH as far as they got, each with outcome
    and time. On failure `diagnosis` explains it; when the cause was the wrong
    security mode and the other one works, `alternative` holds the settings
    that work. With `test_connection(blacklists=True)`, `blacklists` says whether
    the sending server is on a blacklist (`ok` stays about the connection).
    """

    ok: bool
    steps: tuple[Step, ...]
    diagnosis: Diagnosis | None = None
    error: DeliveryError | None = attrs.field(default=None, eq=False)
    alternative: SmtpSettings | None = None
    extensions: dict[str, str] = attrs.field(factory=dict)
    imap: ConnectionReport | None = None  # the IMAP account's own report, when configured
    imap_alternative: ImapSettings | None = None  # for an IMAP report: the mode that works
    blacklists: BlacklistReport | None = None

    def __str__(self) -> str:
        lines = []
        for step in self.steps:
            mark = "ok  " if step.ok else "FAIL"
            lines.append(f"{mark} {step.name:<9} {step.seconds * 1000:7.1f} ms  {step.detail}")
        if self.ok:
            lines.append("The connection works.")
        elif self.diagnosis is not None:
            lines.append(str(self.diagnosis))
        if self.imap is not None:
            lines += ["", "IMAP:", str(self.imap)]
        if self.blacklists is not None:
            lines += ["", str(self.blacklists)]
        return "\n".join(lines)
