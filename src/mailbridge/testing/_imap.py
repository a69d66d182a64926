"""`FakeImapServer`: an in-memory IMAP4rev1 server (RFC 3501) on loopback, with faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from ..settings import ImapSettings
from ._imap_protocol import Session
from ._imap_store import LAYOUTS, SYSTEM_FLAGS, Folder, Store
from ._loop import STOP_TIMEOUT
from ._sasl import TokenIssuer
from ._tls_server import TlsMode, TlsServer

__all__ = ["FakeImapServer", "ImapMessage"]

Layout = Literal["english", "german", "gmail", "dotted"]
_T = TypeVar("_T")


@attrs.frozen
class ImapMessage:
    """A stored message as a test sees it: UID, flags, internal date and exact bytes."""

    uid: int
    flags: frozenset[str]
    internal_date: dt.datetime
    data: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")


class FakeImapServer(TlsServer):
    """An in-memory IMAP4rev1 server on a free loopback port, run in a background thread.

    `tls` is "implicit" (default), "starttls" (LOGINDISABLED until STARTTLS) or "none";
    certificates come from a throw-away ECDSA CA (`ca_file`, `client_ssl_context()`).
    `users` maps addresses to passwords (LOGIN, AUTHENTICATE PLAIN; default one user
    alice@example.test / alice-secret), `tokens` to XOAUTH2/OAUTHBEARER bearer tokens;
    with `authorization_server` (a `FakeAuthorizationServer`) the tokens it issued and
    has not expired are accepted too (`oauth_refused` counts refused ones, `oauth_endings`
    keeps what the client answered to the error challenge, `oauth_hosts` the `host=` of
    each OAUTHBEARER login, None for XOAUTH2). Each user has
    their own folders, made from `layout`: "english" (special-use Sent, Drafts, Trash,
    Junk, Archive), "german" (Gesendet, Entwürfe, Papierkorb, no special-use), "gmail"
    ([Gmail]/...) or "dotted" (INBOX.Sent, delimiter "."). Folder names are Unicode
    here and modified UTF-7 on the wire.

    `seed()` pre-loads messages, `create_folder()` adds folders; `messages()` and
    `folders()` show what the server holds (safe from any thread). Faults are
    attributes you may set at any time: `append_reply` (e.g. "NO [OVERQUOTA] Quota
    exceeded"), `login_reply`, `drop_on` (a command name such as "APPEND" or "UID
    FETCH": the connection is closed when it arrives), `stall_seconds` (delay before
    every tagged response), `omit_capabilities`; plus `change_uidvalidity(folder)` and
    `drop_connections()`. `errors` collects tracebacks of server bugs (should stay empty).
    """

    _name = "FakeImapServer"

    def __init__(
        self,
        *,
        tls: TlsMode = "implicit",
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        authorization_server: TokenIssuer | None = None,
        layout: Layout = "english",
        certificate_hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
        max_literal: int = 50 * 1024 * 1024,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(tls=tls, host=host, certificate_hostnames=certificate_hostnames)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        self.users = dict(users if users is not None else {"alice@example.test": "alice-secret"})
        self.tokens = dict(tokens or {})
        self.authorization_server = authorization_server
        self.oauth_refused = 0
        self.oauth_endings: list[bytes] = []  # what clients sent after a refusal's challenge
        self.oauth_hosts: list[str | None] = []  # OAUTHBEARER's host= field (None: XOAUTH2)
        self.layout = layout
        self.max_literal = max_literal
        self.connections = 0
        self.autologout_seconds = 120.0
        self.errors: list[str] = []  # tracebacks of server bugs (each closed one connection)
        # Faults: set them before or while a test runs.
        self.append_reply: str | None = None
        self.login_reply: str | None = None
        self.drop_on: str | None = None
        self.stall_seconds: float = 0.0
        self.omit_capabilities: set[str] = set()

        self._stores: dict[str, Store] = {}
        self._validity = itertools.count(int(time.time()) % 1_000_000_000 + 1)
        self._sessions: set[Session] = set()

    # -- configuration helpers ---------------------------------------------------

    def imap_settings(
        self, username: str | None = None, password: str | None = None, **changes: Any
    ) -> ImapSettings:
        """`ImapSettings` for this server; credentials default to the only user (or token)."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "ca_file": self.ca_file,
            "connect_timeout": 5.0,
            "command_timeout": 5.0,
        }
        if username is None and password is None:
            if len(self.users) == 1:
                username, password = next(iter(self.users.items()))
            elif not self.users and len(self.tokens) == 1 and "oauth2_token" not in changes:
                username, token = next(iter(self.tokens.items()))
                values["oauth2_token"] = lambda: token
        values.update(username=username, password=password)
        values.update(changes)
        if values.get("ssl_context") is not None:
            values["ca_file"] = None
        return ImapSettings(**values)

    # -- the mail store (safe to call from any thread) ------------------------------

    def _next_validity(self) -> int:
        return next(self._validity)

    def _store(self, user: str) -> Store:
        if user not in self._stores:
            self._stores[user] = Store.from_layout(self.layout, iter(self._next_validity, None))
        return self._stores[user]

    def _user(self, user: str | None) -> str:
        if user is not None:
            return user
        names = [*self.users, *self.tokens]
        if not names:
            raise ValueError("the server has no users")
        return names[0]

    def _call(self, func: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return func()

        async def run() -> _T:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(STOP_TIMEOUT)

    def _folder(self, folder: str, user: str | None) -> Folder:
        found = self._store(self._user(user)).get(folder)
        if found is None:
            raise KeyError(f"no folder {folder!r}")
        return found

    def _changed(self, folder: Folder) -> None:
        for session in self._sessions:
            if session.folder is folder:
                session.event.set()

    def seed(
        self,
        folder: str,
        message_bytes: bytes,
        flags: Iterable[str] = (),
        internal_date: dt.datetime | None = None,
        *,
        user: str | None = None,
    ) -> int:
        """Store a message in folder (of user, default the first); returns its UID."""
        when = internal_date or dt.datetime.now(dt.UTC).astimezone().replace(microsecond=0)
        if when.tzinfo is None:
            when = when.astimezone()
        canonical = {flag.lower(): flag for flag in SYSTEM_FLAGS}
        flag_set = {canonical.get(flag.lower(), flag) for flag in flags}

        def add() -> int:
            target = self._folder(folder, user)
            uid = target.add(bytes(message_bytes), flag_set, when)
            self._changed(target)
            return uid

        return self._call(add)

    def messages(self, folder: str, *, user: str | None = None) -> list[ImapMessage]:
        """The messages in folder, by ascending UID."""

        def read() -> list[ImapMessage]:
            return [
                ImapMessage(m.uid, frozenset(m.flags), m.internal_date, m.data)
                for m in self._folder(folder, user).messages
            ]

        return self._call(read)

    def folders(self, *, user: str | None = None) -> list[str]:
        """The folder names (Unicode, with the layout's delimiter)."""
        return self._call(lambda: list(self._store(self._user(user)).folders))

    def create_folder(
        self, name: str, special_use: str | None = None, *, user: str | None = None
    ) -> None:
        """Add a folder (e.g. with special_use="\\\\Sent"), as if an admin made it."""

        def create() -> None:
            store = self._store(self._user(user))
            if store.get(name) is None:
                store.folders[store.key(name)] = Folder(
                    store.key(name), special_use, self._next_validity()
                )
                store.subscribed.add(store.key(name))

        self._call(create)

    def change_uidvalidity(self, folder: str, *, user: str | None = None) -> int:
        """Give folder a new UIDVALIDITY and renumber its messages; returns the new value."""

        def change() -> int:
            target = self._folder(folder, user)
            target.uidvalidity = self._next_validity()
            for uid, message in enumerate(target.messages, 1):
                message.uid = uid
            target.uidnext = len(target.messages) + 1
            self._changed(target)
            return target.uidvalidity

        return self._call(change)

    def drop_connections(self) -> None:
        """Close every open client connection from the server side (an idle time-out)."""

        def drop() -> None:
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()

        if self._loop is not None:
            self._call(drop)

    # -- running -------------------------------------------------------------------

    def _factory(self) -> Session:
        session = Session(self)
        self.connections += 1
        self._sessions.add(session)
        return session

    def _close_connections(self) -> None:
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.abort()
        self._sessions.clear()
