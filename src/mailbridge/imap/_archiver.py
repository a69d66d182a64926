"""Storing a copy of each sent message in the tenant's Sent folder, exactly once."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import imapclient
import imapclient.exceptions

from ..errors import ConfigurationError, DeliveryError
from ..settings import ImapSettings
from ._connection import ImapLimits, close_imap, open_imap
from ._copies import (
    appended_uids,
    find_by_message_id,
    refusal_is_final,
    refused_literal,
    reply_text,
)
from ._folders import Folder, find_sent_folder, list_folders

if TYPE_CHECKING:
    from ..providers._registry import ProviderRegistry

__all__ = ["ArchiveOutcome", "SentArchiver", "files_own_sent_copy"]

MAX_BATCH = 32  # messages archived together (one SEARCH, one MULTIAPPEND)
MAX_BATCH_BYTES = 8 * 1024 * 1024
_DATE = re.compile(rb"^Date:[ \t]*(.+?)\r?\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL)


def _registry(registry: ProviderRegistry | None) -> ProviderRegistry:
    # Imported here: providers' set-up wizard uses this package's probe.
    from ..providers._registry import ProviderRegistry

    return registry if registry is not None else ProviderRegistry.default()


def files_own_sent_copy(smtp_host: str, registry: ProviderRegistry | None = None) -> bool:
    """True when the provider of `smtp_host` files what it relays in Sent itself.

    Decided by the provider registry (`Provider.files_sent_copy`; the built-in
    presets by default): Gmail, Google Workspace, Microsoft 365, Outlook.com.
    """
    provider = _registry(registry).by_server(smtp_host)
    return provider is not None and provider.files_sent_copy


@attrs.frozen
class ArchiveOutcome:
    """What happened to the copy: archived (where, which UID) or why not."""

    archived: bool
    folder: str | None = None
    uid: int | None = None
    reason: str | None = None
    already_there: bool = False  # found by Message-ID: not appended again


def _with_bcc(data: bytes, bcc: Sequence[str]) -> bytes:
    """The transmitted bytes plus a Bcc header, so the tenant sees who got a blind copy."""
    if not bcc:
        return data
    return b"Bcc: " + ", ".join(bcc).encode("utf-8") + b"\r\n" + data


def _message_date(data: bytes) -> dt.datetime | None:
    header = data.split(b"\r\n\r\n", 1)[0]
    match = _DATE.search(header + b"\r\n")
    if match is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(match.group(1).decode("ascii", "replace"))
    except (TypeError, ValueError):
        return None


@attrs.define(eq=False)
class _Request:
    """One message waiting to be archived; `outcome` is set once it is settled."""

    data: bytes
    message_id: str
    date: dt.datetime | None
    outcome: ArchiveOutcome | None = None


class _LiteralRefused(Exception):
    """The server answered a message's literal with NO instead of asking for it.

    Nothing was stored. `requests` empty: a MULTIAPPEND was refused as a whole.
    """

    def __init__(self, requests: list[_Request], detail: str) -> None:
        super().__init__(detail)
        self.requests = requests


class _Closed(Exception):
    """The archiver was closed while a batch still needed a new session."""


class SentArchiver:
    """Appends sent messages to the archive folder of one IMAP account.

    The folder is the one in `ImapSettings.folder`, else the special-use
    `\\Sent` folder, else the provider's own name for it (`Provider.sent_folder`
    of the provider in `registry` whose IMAP host this is), else a well-known name.
    Before appending it looks for the Message-ID, so a retried archive never
    stores a second copy. One IMAP
    session is kept open between messages (checked with NOOP when idle, reopened
    once when the server dropped it).

    Threads archiving at the same time are served together: while one batch is
    being stored, new requests wait, and the next batch (up to `max_batch`
    messages) costs one SEARCH for all their Message-IDs and one MULTIAPPEND
    (RFC 3502; with LITERAL+ a single round trip) where the server offers it,
    else one APPEND each. Failures are returned as an `ArchiveOutcome`, never
    raised. `limits` bounds each IMAP command (default `ImapLimits()`; the
    deadline starts after a message's upload, see `ImapLimits`).
    """

    def __init__(
        self,
        settings: ImapSettings,
        *,
        idle_check_after: float = 30.0,
        max_batch: int = MAX_BATCH,
        registry: ProviderRegistry | None = None,
        limits: ImapLimits | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigurationError("max_batch", "must be at least 1")
        self.settings = settings
        self.idle_check_after = idle_check_after
        self.max_batch = max_batch
        self.registry = registry
        self.limits = limits or ImapLimits()
        self._changed = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._busy = False  # a thread is storing a batch
        self._client: imapclient.IMAPClient | None = None
        self._folder: str | None = None
        self._last_used = 0.0
        self._closed = False
        self._appending: list[_Request] = []  # the requests of the APPEND under way

    def archive(self, data: bytes, *, message_id: str, bcc: Sequence[str] = ()) -> ArchiveOutcome:
        """Store `data` (as transmitted) with \\Seen and the message's date."""
        request = _Request(_with_bcc(data, bcc), message_id, _message_date(data))
        with self._changed:
            if self._closed:
                return ArchiveOutcome(False, reason="the archiver was closed")
            self._pending.append(request)
            try:
                while self._busy and request.outcome is None:
                    self._changed.wait()
            except BaseException:  # interrupted while waiting: withdraw the request
                if request in self._pending:
                    self._pending.remove(request)
                raise
            if request.outcome is not None:
                return request.outcome
            self._busy = True
        batch: list[_Request] = []
        try:
            while request.outcome is None:
                batch = self._take_batch()
                assert batch, "a request stays pending until a batch takes it"
                self._store(batch)
                with self._changed:
                    self._changed.notify_all()
        except BaseException:
            with self._changed:
                if request in self._pending:
                    self._pending.remove(request)
            for waiting in batch:  # interrupted: nobody else would settle these
                if waiting.outcome is None:
                    waiting.outcome = ArchiveOutcome(False, reason="archiving was interrupted")
            self._drop()
            raise
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
        return request.outcome

    def find(self, message_ids: Sequence[str]) -> dict[str, int] | None:
        """UIDs of those of `message_ids` already in the archive folder (one SEARCH).

        None when there is no archive folder to look in. IMAP failures are raised
        (the outbox treats them as "cannot tell"). Used to settle a message whose
        SMTP outcome is unknown: a copy in Sent means it went out.
        """
        with self._changed:
            while self._busy:
                self._changed.wait()
            if self._closed:
                return None
            self._busy = True
        try:
            client = self._session()
            folder, _ = self._open_folder(client)
            if folder is None or not message_ids:
                return None if folder is None else {}
            return find_by_message_id(client, list(message_ids))
        except BaseException:
            self._drop()
            raise
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()

    def _take_batch(self) -> list[_Request]:
        with self._changed:
            batch: list[_Request] = []
            size = 0
            while self._pending and len(batch) < self.max_batch:
                if batch and size + len(self._pending[0].data) > MAX_BATCH_BYTES:
                    break
                batch.append(self._pending.popleft())
                size += len(batch[-1].data)
            if self._closed:
                for request in batch:
                    request.outcome = ArchiveOutcome(False, reason="the archiver was closed")
            return batch

    def _store(self, batch: list[_Request]) -> None:
        """Archive `batch`, settling every request in it; never raises an IMAP error.

        A lost connection settles the messages whose APPEND was under way as not
        archived (the server may still be storing them; `archive()` again looks
        them up first) and tries the others once more on a new session.
        """

        def settle(reason: str, requests: Sequence[_Request] = batch) -> None:
            for request in requests:
                if request.outcome is None:
                    request.outcome = ArchiveOutcome(False, reason=reason)

        single_only = False
        losses = 0
        for _ in range(len(batch) + 3):  # each round settles one, or changes how
            open_requests = [r for r in batch if r.outcome is None]
            if not open_requests:
                return
            try:
                client = self._session()
                self._archive(client, open_requests, single_only=single_only)
            except _Closed:
                settle("the archiver was closed")
            except _LiteralRefused as exc:
                self._drop()
                if exc.requests:
                    settle(f"the IMAP server refused: {exc}", exc.requests)
                single_only = True
                continue
            except (imapclient.exceptions.IMAPClientAbortError, OSError) as exc:
                in_progress, self._appending = self._appending, []
                self._drop()
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                settle(
                    f"the IMAP connection was lost while storing the message ({detail}); "
                    "archive it again to check",
                    in_progress,
                )
                losses += 1
                if losses < 2:
                    continue  # a stale session or a passing failure: once more, fresh
                settle(f"the IMAP connection was lost ({detail})")
            except imapclient.exceptions.IMAPClientError as exc:
                self._drop()
                settle(f"the IMAP server refused: {exc}")
            except DeliveryError as exc:  # after the above: IMAP command errors are both
                settle(f"the IMAP server could not be used: {exc}")
            except Exception as exc:  # a malformed answer imapclient could not parse
                self._drop()
                settle(f"the IMAP server's answer could not be understood ({type(exc).__name__})")
            else:
                self._last_used = time.monotonic()
            return
        settle("archiving gave up after repeated refusals")

    def _session(self) -> imapclient.IMAPClient:
        client = self._client
        if client is not None and time.monotonic() - self._last_used > self.idle_check_after:
            try:
                client.noop()
            except (imapclient.exceptions.IMAPClientError, OSError):
                self._drop()
                client = None
        if client is not None:
            return client
        if self._closed:
            raise _Closed
        self._client = open_imap(self.settings, limits=self.limits)
        self._folder = None
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            close_imap(self._client)
        self._client = None
        self._folder = None

    def close(self) -> None:
        """LOGOUT from the kept session; archiving afterwards is refused (no new session)."""
        with self._changed:
            self._closed = True
            # A batch being stored finishes first (bounded by the IMAP time-outs).
            while self._busy:
                self._changed.wait(1.0)
            for request in self._pending:
                request.outcome = ArchiveOutcome(False, reason="the archiver was closed")
            self._pending.clear()
            self._changed.notify_all()
            self._drop()

    def _open_folder(self, client: imapclient.IMAPClient) -> tuple[str | None, str | None]:
        """The archive folder, selected; or None and why not."""
        if self._folder is not None:
            return self._folder, None
        folders = list_folders(client)
        folder = self.settings.folder
        if folder is not None:
            if folder not in {f.name for f in folders}:
                return None, f"the folder {folder!r} does not exist"
        else:
            folder = self._providers_sent_folder(folders) or find_sent_folder(client, folders)
            if folder is None:
                return None, "no Sent folder was found; choose the archive folder"
        client.select_folder(folder)
        self._folder = folder
        return folder, None

    def _providers_sent_folder(self, folders: list[Folder]) -> str | None:
        """The registry's Sent folder name for this IMAP host, unless a folder is flagged."""
        if any((f.special_use or "").lower() == "\\sent" and f.selectable for f in folders):
            return None  # the server's own flag is more reliable than a preset name
        provider = _registry(self.registry).by_server(self.settings.host)
        name = provider.sent_folder if provider is not None else None
        selectable = {f.name for f in folders if f.selectable}
        return name if name in selectable else None

    def _archive(
        self, client: imapclient.IMAPClient, batch: list[_Request], *, single_only: bool
    ) -> None:
        folder, problem = self._open_folder(client)
        if folder is None:
            for request in batch:
                request.outcome = ArchiveOutcome(False, self.settings.folder, reason=problem)
            return
        firsts: dict[str, _Request] = {}  # one request per Message-ID; twins copy it
        for request in batch:
            firsts.setdefault(request.message_id, request)
        found = find_by_message_id(client, list(firsts))
        todo = []
        for message_id, request in firsts.items():
            uid = found.get(message_id)
            if uid is not None:
                request.outcome = ArchiveOutcome(True, folder, uid, already_there=True)
            else:
                todo.append(request)
        self._append(client, folder, todo, single_only=single_only)
        for request in batch:  # a twin of a message in this batch: the same copy
            twin = firsts[request.message_id].outcome
            if request.outcome is None and twin is not None:
                request.outcome = attrs.evolve(twin, already_there=twin.archived)

    def _append(
        self,
        client: imapclient.IMAPClient,
        folder: str,
        todo: list[_Request],
        *,
        single_only: bool,
    ) -> None:
        # MULTIAPPEND also for one message where LITERAL+ is offered: imapclient sends
        # the literal at once there (one round trip); its append() waits for "+" (two).
        multiappend = client.has_capability("MULTIAPPEND") and not single_only
        worth_it = len(todo) > 1 or client.has_capability("LITERAL+")
        if todo and multiappend and worth_it and self._multiappend(client, folder, todo):
            return
        for request in todo:  # one APPEND each: a NO here is final for that message
            self._appending = [request]
            try:
                response = client.append(
                    folder, request.data, flags=(imapclient.SEEN,), msg_time=request.date
                )
            except imapclient.exceptions.IMAPClientAbortError as exc:
                if refused_literal(exc):
                    self._appending = []
                    raise _LiteralRefused([request], str(exc)) from None
                raise  # lost mid-command: `_appending` tells _store which one
            except imapclient.exceptions.IMAPClientError as exc:
                self._appending = []
                request.outcome = ArchiveOutcome(
                    False, folder, reason=f"the IMAP server refused: {exc}"
                )
                continue
            self._appending = []
            (uid,) = appended_uids(response, 1)
            request.outcome = ArchiveOutcome(True, folder, uid)

    def _multiappend(
        self, client: imapclient.IMAPClient, folder: str, todo: list[_Request]
    ) -> bool:
        """One MULTIAPPEND for `todo`; False when it must be retried as single APPENDs.

        By RFC 3502 a refused MULTIAPPEND stored nothing. A refusal is final (no
        second upload) for a single message (the command is exactly an APPEND) and
        for a refusal that concerns the folder (over quota, no permission, ...);
        only a batch refused for its form (MULTIAPPEND not understood, a limit, an
        unexplained NO hiding which message failed) is tried again one by one.
        """
        # `_appending` stays set only when the connection is lost mid-command: then
        # these messages may or may not have been stored.
        self._appending = todo
        try:
            response = client.multiappend(folder, [_append_item(r) for r in todo])
        except imapclient.exceptions.IMAPClientAbortError as exc:
            if refused_literal(exc):
                self._appending = []
                raise _LiteralRefused(todo if len(todo) == 1 else [], str(exc)) from None
            raise
        except imapclient.exceptions.IMAPClientError:  # BAD: refused, nothing stored
            self._appending = []
            if len(todo) == 1:
                raise
            return False  # the batch's form was not understood: one APPEND each
        self._appending = []
        if isinstance(response, tuple) and response[0] == "OK":
            for request, uid in zip(todo, appended_uids(response, len(todo)), strict=True):
                request.outcome = ArchiveOutcome(True, folder, uid)
            return True
        reason = reply_text(response)
        if len(todo) > 1 and not refusal_is_final(reason):
            return False
        for request in todo:
            request.outcome = ArchiveOutcome(
                False, folder, reason=f"the IMAP server refused: {reason}"
            )
        return True


def _append_item(request: _Request) -> dict[str, Any]:
    item: dict[str, Any] = {"msg": request.data, "flags": (imapclient.SEEN,)}
    if request.date is not None:
        item["date"] = request.date
    return item
