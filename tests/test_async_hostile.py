"""A hostile server against the asyncio connection: bounded memory, typed errors."""

from __future__ import annotations

import asyncio

import pytest

from mailbridge import DeliveryError, SmtpSettings
from mailbridge.smtp import AsyncSmtpConnection

FLOOD = 16 * 1024 * 1024


async def _flooding_server(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: list[int]
) -> None:
    writer.write(b"220 flood ESMTP\r\n")
    await reader.readline()  # EHLO
    writer.write(b"250-flood\r\n250 PIPELINING\r\n")
    line = b"250-" + b"x" * 1000 + b"\r\n"
    try:
        for _ in range(FLOOD // len(line)):  # unasked replies, as fast as the client reads
            writer.write(line)
            await asyncio.wait_for(writer.drain(), 0.5)
            sent[0] += len(line)
    except (TimeoutError, ConnectionError):
        pass  # the client stopped reading (or hung up): that is the point
    writer.close()


def test_an_idle_connection_flooded_by_the_server_stays_bounded() -> None:
    async def scenario() -> None:
        sent = [0]
        server = await asyncio.start_server(
            lambda r, w: _flooding_server(r, w, sent), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        settings = SmtpSettings("127.0.0.1", port, "none", command_timeout=5)
        connection = await AsyncSmtpConnection.open(settings)
        await asyncio.sleep(1.5)  # idle in a pool: nobody parses what arrives
        assert connection.reader.buffered < 1024 * 1024
        assert sent[0] < FLOOD  # the server was held back, not read to the end
        with pytest.raises(DeliveryError):  # out of step: never taken for a reply
            await connection.send("a@example.test", ["b@example.test"], b"Subject: s\r\n\r\nb\r\n")
        assert not connection.is_open
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
