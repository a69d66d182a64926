"""A small SMTP server on the test's own event loop, with gates to stall it at chosen points.

`before_354` / `before_final` are `asyncio.Event`s: when set to be waited on
(`hold_354()` / `hold_final()`), the server stops before answering DATA with
354 (the envelope is on the wire, the message not) or before the final 250
(the message is on the wire) until the test releases it. It counts what
arrived: `messages` (subjects of complete messages, delivered or not),
`envelopes`, `connections`, `closed_mid_transaction`.
"""

from __future__ import annotations

import asyncio
import contextlib

from mailbridge import SmtpSettings

LINE_LIMIT = 10_000  # commands per connection, to bound every loop


class ScriptedSmtp:
    def __init__(self, *, chunking: bool = False, pipelining: bool = True) -> None:
        self.chunking = chunking
        self.pipelining = pipelining
        self.messages: list[str] = []
        self.envelopes = 0
        self.connections = 0
        self.closed_mid_transaction = 0
        self.commands: list[str] = []
        self.reached_354 = asyncio.Event()  # the server got DATA (and holds, if asked)
        self.reached_final = asyncio.Event()  # the whole message arrived
        self._gate_354: asyncio.Event | None = None
        self._gate_final: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.port = 0

    def hold_354(self) -> asyncio.Event:
        self._gate_354 = asyncio.Event()
        return self._gate_354

    def hold_final(self) -> asyncio.Event:
        self._gate_final = asyncio.Event()
        return self._gate_final

    def settings(self, **changes: object) -> SmtpSettings:
        values: dict[str, object] = {"command_timeout": 5, "data_timeout": 5, "chunking": True}
        values.update(changes)
        return SmtpSettings("127.0.0.1", self.port, "none", **values)  # type: ignore[arg-type]

    async def __aenter__(self) -> ScriptedSmtp:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for gate in (self._gate_354, self._gate_final):
            if gate is not None:
                gate.set()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self.connections += 1
        in_transaction = False
        try:
            writer.write(b"220 scripted ESMTP\r\n")
            for _ in range(LINE_LIMIT):
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    break
                command = line.decode().strip()
                self.commands.append(command)
                verb = command.split(" ")[0].upper()
                if verb == "EHLO":
                    extra = "250-PIPELINING\r\n" if self.pipelining else ""
                    extra += "250-CHUNKING\r\n" if self.chunking else ""
                    writer.write(f"250-scripted\r\n{extra}250 8BITMIME\r\n".encode())
                elif verb == "MAIL":
                    in_transaction = True
                    self.envelopes += 1
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb in ("RCPT", "RSET", "NOOP"):
                    if verb == "RSET":
                        in_transaction = False
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == "DATA":
                    await writer.drain()
                    self.reached_354.set()
                    if self._gate_354 is not None:
                        await asyncio.wait_for(self._gate_354.wait(), 10)
                    writer.write(b"354 go ahead\r\n")
                    body = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 10)
                    await self._final(writer, body)
                    in_transaction = False
                elif verb == "BDAT":
                    body = await asyncio.wait_for(reader.readexactly(int(command.split()[1])), 10)
                    await self._final(writer, body)
                    in_transaction = False
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"502 5.5.2 not implemented\r\n")
                await writer.drain()
            else:
                raise AssertionError("too many commands")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if in_transaction:
                self.closed_mid_transaction += 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._sessions.discard(task)

    async def _final(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        subject = body.split(b"\r\n", 1)[0].decode().removeprefix("Subject: ")
        self.messages.append(subject)
        self.reached_final.set()
        if self._gate_final is not None:
            await writer.drain()
            await asyncio.wait_for(self._gate_final.wait(), 10)
        writer.write(b"250 2.0.0 queued\r\n")
