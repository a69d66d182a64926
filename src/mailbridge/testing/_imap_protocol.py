"""The IMAP command loop of one `FakeImapServer` connection: reading, state checks, dispatch."""

from __future__ import annotations

import asyncio
import re
import ssl
import traceback

from ._imap_connection import Closed, No
from ._imap_login import LoginCommands
from ._imap_mailboxes import MailboxCommands
from ._imap_messages import MessageCommands
from ._imap_syntax import (
    Atom,
    ParseError,
    Token,
    tokenize,
)

MAX_LITERALS = 1000
MAX_COMMANDS = 1_000_000


_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_TAG = re.compile(rb"[!#$&',-.0-9:;<=>?@A-Z^_`a-z|~\[\]/]+")


_STATES = {
    "any": {"CAPABILITY", "NOOP", "LOGOUT", "ID"},
    "unauth": {"STARTTLS", "LOGIN", "AUTHENTICATE"},
    "auth": {
        *("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE"),
        *("LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE"),
    },
    "selected": {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY"}
    | {"MOVE", "UID"},
}


class Session(LoginCommands, MailboxCommands, MessageCommands):
    """One IMAP connection: reads commands, answers them from the server's stores."""

    # -- the command loop ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.tls = transport.get_extra_info("sslcontext") is not None
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        try:
            self.write(b"* OK [CAPABILITY " + self.capabilities() + b"] FakeImapServer ready.\r\n")
            for _ in range(MAX_COMMANDS):
                raw = await self.read_command()
                if raw is not None and not await self.execute(raw):
                    break
        except (Closed, ConnectionError, ssl.SSLError):
            pass
        except Exception:  # never let a bug kill more than this connection
            self.server.errors.append(traceback.format_exc())
            self.write(b"* BYE Internal server error\r\n")
        finally:
            self.server._sessions.discard(self)
            if self.transport is not None:
                self.transport.close()

    async def read_command(self) -> bytes | None:
        line = await self.readline()
        first = line.split(b" ", 2)
        tag = first[0].strip()
        name = first[1].strip().upper().decode("ascii", "replace") if len(first) > 1 else ""
        sub = first[2].split(b" ", 1)[0].strip() if len(first) > 2 else b""
        sub_name = sub.upper().decode("ascii", "replace")
        drop = (self.server.drop_on or "").upper()
        if drop and drop in {name, sub_name if name == "UID" else name, f"{name} {sub_name}"}:
            raise Closed
        raw = bytearray(line)
        for _ in range(MAX_LITERALS):
            match = _LITERAL_AT_END.search(raw)
            if match is None:
                return bytes(raw)
            size, plus = int(match.group(1)), bool(match.group(2))
            if size > self.server.max_literal:
                if plus:
                    self.write(b"* BYE Literal too big\r\n")
                    raise Closed
                self.write(tag + b" NO [TOOBIG] Literal too big\r\n")
                return None
            if not plus:
                self.write(b"+ Ready for literal data\r\n")
            raw += await self.readexactly(size)
            raw += await self.readline()
        self.write(b"* BYE Too many literals\r\n")
        raise Closed

    async def execute(self, raw: bytes) -> bool:
        """Run one command; False when the connection is to be closed."""
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not line.strip():
            return True
        guess = line.split(b" ", 1)[0]
        tag = guess if _TAG.fullmatch(guess) else b"*"
        try:
            tokens = tokenize(line)
        except ParseError as exc:
            self.write(tag + b" BAD " + str(exc).encode() + b"\r\n")
            return True
        if len(tokens) < 2 or not isinstance(tokens[0], Atom) or not isinstance(tokens[1], Atom):
            self.write(tag + b" BAD Missing tag or command\r\n")
            return True
        name, args = tokens[1].upper(), tokens[2:]
        state = "selected" if self.folder else "auth" if self.user else "unauth"
        allowed = (
            _STATES["any"]
            | {
                "unauth": _STATES["unauth"],
                "auth": _STATES["auth"],
                "selected": _STATES["auth"] | _STATES["selected"],
            }[state]
        )
        handler = getattr(self, "cmd_" + name.lower(), None)
        uid = False
        if name == "UID" and name in allowed:
            if not args or not isinstance(args[0], Atom):
                handler = None
            else:
                name, args, uid = args[0].upper(), args[1:], True
                handler = getattr(self, "cmd_" + name.lower(), None)
                if name not in {"FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE"}:
                    handler = None
        self.out = []
        if handler is None:
            result = b"BAD Unknown command " + name.encode()
        elif name not in allowed and not uid:
            result = b"BAD Command not allowed in this state"
        else:
            try:
                result = await handler(tag, args, uid)
            except ParseError as exc:
                result = b"BAD " + str(exc).encode("utf-8", "replace")
            except No as exc:
                result = b"NO " + str(exc).encode("utf-8", "replace")
            except (IndexError, ValueError) as exc:
                result = b"BAD Invalid arguments: " + str(exc).encode("utf-8", "replace")
        if self.folder is not None and name not in {"LOGOUT", "STARTTLS"}:
            self.sync(expunge=name not in {"FETCH", "STORE", "SEARCH"} or uid)
        self.write(b"".join(self.out))
        self.out = []
        if self.server.stall_seconds and not self.closed:
            await asyncio.sleep(self.server.stall_seconds)
        self.write(tag + b" " + result + b"\r\n")
        if name == "STARTTLS" and result.startswith(b"OK"):
            await self.start_tls()
        return name != "LOGOUT"

    async def start_tls(self) -> None:
        self.buffer.clear()  # plaintext sent before the handshake must not count (CVE-2011-0411)
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        context = self.server._server_context
        transport = await loop.start_tls(self.transport, self, context, server_side=True)
        if transport is None:
            raise Closed
        self.transport, self.tls = transport, True

    # -- commands: any state ------------------------------------------------------

    async def cmd_capability(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.untagged(b"CAPABILITY " + self.capabilities())
        return b"OK Capability completed."

    async def cmd_noop(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return b"OK NOOP completed."

    async def cmd_check(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        return b"OK Check completed."

    async def cmd_logout(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.untagged(b"BYE Logging out")
        return b"OK Logout completed."

    async def cmd_id(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        self.untagged(b'ID ("name" "FakeImapServer")')
        return b"OK ID completed."
