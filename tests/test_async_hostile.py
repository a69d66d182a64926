"""A hostile server against the asyncio connection: bounded memory, typed errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mailbridge import Category, ConnectionReport, DeliveryError, SmtpSettings
from mailbridge.smtp import AsyncSmtpConnection, probe_smtp_async

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


def test_a_server_that_never_greets_times_out_on_asyncio_time() -> None:
    async def scenario() -> tuple[ConnectionReport, float, int]:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # says nothing; closed at the end

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = SmtpSettings(
            "127.0.0.1", port, "starttls", command_timeout=0.5, connect_timeout=0.5
        )
        threads = threading.active_count()
        started = asyncio.get_running_loop().time()
        report = await probe_smtp_async(settings)  # STARTTLS, then implicit TLS tried too
        elapsed = asyncio.get_running_loop().time() - started
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
        return report, elapsed, threading.active_count() - threads

    report, elapsed, new_threads = asyncio.run(scenario())
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.TIMEOUT
    assert "expect TLS immediately" in report.diagnosis.summary
    assert report.alternative is None
    assert elapsed < 3
    assert new_threads == 0
