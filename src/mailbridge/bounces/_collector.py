"""`BounceCollector`: reading bounces from an IMAP folder exactly once.

The importer's machinery does the IMAP work: `Checkpoint` (UIDVALIDITY and the
last UID seen), the bounded, reopenable `FolderSession`, and `InboxImporter.commit`
to mark (keyword) or move what was processed. Only reports are marked or moved:
every other message in the folder is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..errors import ConfigurationError, ImapCommandFailed, ImapLimitExceeded
from ..imap._connection import ImapLimits
from ..imap._folder_session import FolderSession, fetch_session
from ..imap._importer import Checkpoint, ImportBatch, InboxImporter
from ..settings import ImapSettings
from ._correlate import SentIndex, correlate, verp_token
from ._mime import MAX_BYTES, normalize, parse_fields
from ._model import BounceReport
from ._parse import looks_like_report, parse_bounce

__all__ = ["BounceBatch", "BounceCollector", "BounceEvent"]

PROCESSED_KEYWORD = "$BounceProcessed"
_STATUSES = {"failed": "bounced", "delayed": "delayed"}


@attrs.frozen
class BounceEvent:
    """One report found in the folder, with the sent message it belongs to (when found).

    Store it; `statuses()` gives each recipient's new delivery status.
    """

    report: BounceReport
    message_id: str | None
    envelope_id: str | None
    matched_by: str | None  # "envelope_id", "message_id", "verp", "failed_recipients"
    verp_token: str | None
    folder: str
    uidvalidity: int
    uid: int

    def statuses(self) -> dict[str, str]:
        """Recipient address to "bounced" (failed) or "delayed", for bounces only."""
        if self.report.kind not in ("dsn", "heuristic"):
            return {}
        return {
            r.address: _STATUSES[r.action] for r in self.report.recipients if r.action in _STATUSES
        }


@attrs.frozen
class BounceBatch:
    """The reports of one run, the checkpoint to persist, and what could not be read.

    The checkpoint stops before the first message in `problems`, so that a report
    that could not be read is fetched again by the next run (not skipped for good).
    """

    events: tuple[BounceEvent, ...]
    checkpoint: Checkpoint
    uids: tuple[int, ...] = ()  # the reports' UIDs: marked or moved by `commit()`
    scanned: int = 0  # new messages looked at (reports and others)
    uidvalidity_changed: bool = False
    problems: tuple[tuple[int, str], ...] = ()
    can_move: bool = True  # the server offers MOVE; without it, `commit()` marks instead


class BounceCollector:
    """Collects bounces (DSNs, complaints, and with `kinds` also auto-replies) from a folder.

    The tenant's INBOX for their own SMTP server, the platform's bounce mailbox for
    the relay. `fetch(checkpoint)` reads without changing anything; `commit(batch)`
    marks the reports with `mark` (default ``$BounceProcessed``) or moves them to
    `move_to`; persist `batch.checkpoint`. `run()` does both and calls `on_event`
    for each event before committing (if it raises, nothing is committed: the
    events come again). `index` ties bounces to sent messages, `bounce_address`
    (relay mode, VERP) names the platform's bounce address. Only the headers of
    each new message are read, and only reports whole (up to `max_message_bytes`).
    """

    def __init__(
        self,
        settings: ImapSettings,
        *,
        folder: str = "INBOX",
        mark: str | None = PROCESSED_KEYWORD,
        move_to: str | None = None,
        index: SentIndex | None = None,
        bounce_address: str | None = None,
        on_event: Callable[[BounceEvent], None] | None = None,
        kinds: Sequence[str] = ("dsn", "arf", "heuristic"),
        batch_size: int = 100,
        max_message_bytes: int = MAX_BYTES,
    ) -> None:
        if mark is None and move_to is None:
            raise ConfigurationError("mark", "give a keyword to mark or a folder to move to")
        if max_message_bytes < 1024:
            raise ConfigurationError("max_message_bytes", "must be at least 1024")
        self.settings = settings
        self.folder = folder
        self.index = index
        self.bounce_address = bounce_address
        self.on_event = on_event
        self.kinds = frozenset(kinds)
        self.max_message_bytes = max_message_bytes
        self._limits = ImapLimits.for_parts(max_message_bytes)
        self._marker = InboxImporter(
            settings,
            folder=folder,
            mark=mark,
            move_to=move_to,
            batch_size=batch_size,
            limits=self._limits,
        )
        self._keyword_marker = InboxImporter(  # for a server without MOVE
            settings, folder=folder, mark=mark, batch_size=batch_size, limits=self._limits
        )
        self.move_to = move_to
        self.mark = mark
        self.batch_size = batch_size

    def fetch(
        self, checkpoint: Checkpoint | None = None, *, timeout: float | None = None
    ) -> BounceBatch:
        """The reports that arrived since `checkpoint`; changes nothing on the server.

        `timeout` bounds all commands after login together (as `InboxImporter.fetch`).
        """
        with fetch_session(self.settings, self.folder, self._limits, timeout) as session:
            return self._fetch(session, checkpoint)

    def commit(self, batch: BounceBatch) -> Checkpoint:
        """Mark or move the reports of `batch`; returns the checkpoint to persist.

        A server without MOVE gets the keyword instead when `mark` is set (the
        reports stay in the folder, marked, and are not collected again).
        """
        fallback = self.move_to is not None and self.mark is not None and not batch.can_move
        marker = self._keyword_marker if fallback else self._marker
        return marker.commit(ImportBatch((), batch.checkpoint, batch.uids))

    def run(self, checkpoint: Checkpoint | None = None) -> BounceBatch:
        """`fetch()`, `on_event` for each event, then `commit()`."""
        batch = self.fetch(checkpoint)
        if self.on_event is not None:
            for event in batch.events:
                self.on_event(event)
        self.commit(batch)
        return batch

    def _fetch(self, session: FolderSession, checkpoint: Checkpoint | None) -> BounceBatch:
        current = session.uidvalidity
        changed = checkpoint is not None and checkpoint.uidvalidity != current
        last_uid = checkpoint.last_uid if checkpoint is not None and not changed else 0
        criteria: list[Any] = ["NOT", "KEYWORD", self.mark] if self.mark else ["ALL"]
        if last_uid:
            criteria = ["UID", f"{last_uid + 1}:*", *criteria]
        uids = sorted(uid for uid in map(int, session.client.search(criteria)) if uid > last_uid)
        session.max_reopens += len(uids)
        events: list[BounceEvent] = []
        problems: list[tuple[int, str]] = []
        for start in range(0, len(uids), self.batch_size):
            chunk = uids[start : start + self.batch_size]
            for uid in self._candidates(session, chunk, problems):
                event = self._event(session, uid, problems)
                if event is not None:
                    events.append(event)
        newest = max(uids, default=last_uid)
        if problems:  # a report that could not be read now is asked for again next time
            newest = max(last_uid, min(newest, min(uid for uid, _ in problems) - 1))
        return BounceBatch(
            tuple(events),
            Checkpoint(current, newest),
            tuple(event.uid for event in events),
            len(uids),
            changed,
            tuple(problems),
            can_move=bool(session.client.has_capability("MOVE")),
        )

    def _candidates(
        self, session: FolderSession, uids: list[int], problems: list[tuple[int, str]]
    ) -> list[int]:
        """The UIDs whose headers look like a report (the others are never downloaded)."""
        try:
            response = session.client.fetch(uids, ["BODY.PEEK[HEADER]"])
        except (ImapCommandFailed, ImapLimitExceeded) as exc:
            if isinstance(exc, ImapLimitExceeded):
                session.reopen(exc)
            if len(uids) > 1:  # one message's fault, or too much together: ask one by one
                return [uid for one in uids for uid in self._candidates(session, [one], problems)]
            problems.extend((uid, f"its headers could not be read: {exc}") for uid in uids)
            return []
        found = []
        for uid in uids:
            header = (response.get(uid) or {}).get(b"BODY[HEADER]")
            if isinstance(header, bytes) and looks_like_report(parse_fields(normalize(header))):
                found.append(uid)
        return found

    def _event(
        self, session: FolderSession, uid: int, problems: list[tuple[int, str]]
    ) -> BounceEvent | None:
        item = f"BODY.PEEK[]<0.{self.max_message_bytes}>"
        try:
            data = session.client.fetch([uid], [item]).get(uid) or {}
        except (ImapCommandFailed, ImapLimitExceeded) as exc:
            if isinstance(exc, ImapLimitExceeded):
                session.reopen(exc)
            problems.append((uid, f"it could not be read: {exc}"))
            return None
        raw = data.get(b"BODY[]<0>")
        if not isinstance(raw, bytes):
            problems.append((uid, "the server did not return it (deleted meanwhile?)"))
            return None
        report = parse_bounce(raw)
        if report is None or report.kind not in self.kinds:
            return None
        token = verp_token(raw, self.bounce_address) if self.bounce_address else None
        found = correlate(report, index=self.index, verp=token)
        return BounceEvent(
            report=report,
            message_id=found.message_id,
            envelope_id=found.envelope_id,
            matched_by=found.matched_by,
            verp_token=token,
            folder=self.folder,
            uidvalidity=session.uidvalidity,
            uid=uid,
        )
